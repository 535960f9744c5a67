#!/usr/bin/env bash
# Second command of the README: install what the tests need, start the
# services they use, and run the whole suite. Arguments go to pytest.
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv_dir="${OTSCC_VENV:-$repo_dir/.venv}"
cd "$repo_dir"

"$repo_dir/scripts/install.sh" --with-test-peers

# PostgreSQL: the database tests also run there. Start the local cluster if
# it is installed but stopped.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql ]]; then
        version="$(ls /etc/postgresql | sort -V | tail -n 1)"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    fi
fi

# dcmjs, the DICOM parser OHIF uses, reads the SEG back in the writer tests.
if [[ -f tests/js/package-lock.json ]] && command -v npm >/dev/null 2>&1; then
    (cd tests/js && timeout 300 npm ci --no-audit --no-fund --loglevel=error)
fi

export OTSCC_TEST_DATA="${OTSCC_TEST_DATA:-$repo_dir/../shared/data}"
mkdir -p test-artifacts
set +e
"$venv_dir/bin/python" -m pytest -ra "$@"
status=$?
set -e
# pytest exits 5 when it collected no test: that is a failure of the suite.
exit "$status"
