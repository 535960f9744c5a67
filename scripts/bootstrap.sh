#!/usr/bin/env bash
# First command of the README: install everything, then start the node on
# its embedded defaults (SQLite job database and spool under ./var, the
# bundled demo model, AE title OTSCC_NODE on port 11112) and the destination
# PACS in config/node.toml. Extra arguments go
# to `otscc-node serve`, for example: scripts/bootstrap.sh --config site.toml
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo_dir/scripts/install.sh"
cd "$repo_dir"
config_args=()
if [[ -z "${OTSCC_CONFIG:-}" && " $* " != *" --config "* && " $* " != *" -c "* ]]; then
    config_args=(--config "$repo_dir/config/node.toml")
fi
exec "${OTSCC_VENV:-$repo_dir/.venv}/bin/otscc-node" serve "${config_args[@]}" "$@"
