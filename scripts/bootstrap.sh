#!/usr/bin/env bash
# First command of the README: install everything, then start the node on
# its embedded defaults (SQLite job database and spool under ./var, the
# bundled demo model, AE title OTSCC_NODE on port 11112). Extra arguments go
# to `otscc-node serve`, for example: scripts/bootstrap.sh --config site.toml
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo_dir/scripts/install.sh"
cd "$repo_dir"
exec "${OTSCC_VENV:-$repo_dir/.venv}/bin/otscc-node" serve "$@"
