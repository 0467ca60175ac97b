# Installs Debian packages that are missing, once, idempotently. Sourced by the scripts beside it.

ensure_apt_packages() {
    local missing=()
    local package
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$package")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    echo "panza: installing ${missing[*]}" >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
}

# What building Panza needs beyond the Swift toolchain.
ensure_panza_build_dependencies() {
    ensure_apt_packages pkg-config libsqlite3-dev liblz4-dev
}
