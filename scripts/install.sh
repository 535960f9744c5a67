#!/usr/bin/env bash
# Install everything the node needs on a Debian-family machine: DCMTK and
# the DICOM validator from Debian, then a virtual environment with the
# Python packages. With --with-test-peers it also installs the peers the
# test suite starts. Safe to run again; it skips what is already in place.
#
#   OTSCC_SKIP_APT=1     do not call apt-get (no root, or packages managed elsewhere)
#   OTSCC_GPU=1          install TensorFlow with CUDA instead of the CPU build
#   OTSCC_VENV=DIR       virtual environment folder (default: .venv in the repository)
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv_dir="${OTSCC_VENV:-$repo_dir/.venv}"
python_bin="${PYTHON:-python3}"

# Run-time tools: dciodvfy (dicom3tools) validates every SEG and SR before it
# leaves the node, and DCMTK's dsrdump reads SRs back.
apt_packages=(dcmtk dicom3tools curl)

# Test-time peers, with --with-test-peers (scripts/test.sh passes it):
# Orthanc, Chromium with a CJK font for the Chinese dashboard screenshots,
# iproute2 and util-linux for Orthanc's network namespace, and Node.js for
# dcmjs. They stay off production nodes: on systemd hosts the orthanc
# package starts a PACS service that listens on every interface.
if [[ "${1:-}" == "--with-test-peers" ]]; then
    apt_packages+=(orthanc chromium fonts-noto-cjk iproute2 util-linux)
    command -v node >/dev/null 2>&1 || apt_packages+=(nodejs npm)
fi

install_debian_packages() {
    if [[ "${OTSCC_SKIP_APT:-0}" == "1" ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "install: skipping Debian packages (apt-get unavailable or OTSCC_SKIP_APT=1)"
        return
    fi
    local missing=()
    for package in "${apt_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "install: Debian packages already installed"
        return
    fi
    local sudo=""
    [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
    echo "install: apt-get install ${missing[*]}"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_python_packages() {
    [[ -x "$venv_dir/bin/python" ]] || "$python_bin" -m venv "$venv_dir"
    local pip=("$venv_dir/bin/python" -m pip --disable-pip-version-check)
    local stamp="$venv_dir/.otscc-installed"
    local digest
    digest="$(cat "$repo_dir/pyproject.toml" "$repo_dir/scripts/install.sh" | sha256sum | cut -d' ' -f1)${OTSCC_GPU:-0}"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$digest" ]]; then
        echo "install: Python packages already installed in $venv_dir"
        return
    fi

    "${pip[@]}" install -q --upgrade pip
    # pyradiomics 3.0.1 has no wheel for Python 3.11 and its 3.1.0 sdist is
    # broken, so 3.0.1 is built here against the numpy already installed.
    "${pip[@]}" install -q numpy setuptools wheel versioneer
    "${pip[@]}" install -q --no-build-isolation "pyradiomics==3.0.1"
    local extras="test"
    [[ "${OTSCC_GPU:-0}" == "1" ]] && extras="test,gpu"
    "${pip[@]}" install -q -e "$repo_dir[$extras]"
    echo "$digest" >"$stamp"
}

install_debian_packages
install_python_packages
echo "install: done; the node is $venv_dir/bin/otscc-node"
