#!/usr/bin/env bash
# Installs what `keel build`, `keel run` and the QEMU/Bochs tests need on a Debian 12 host.
# Idempotent: installs only what is missing, so it is cheap to run before every CI run.
#
#   qemu-system-x86     keel run, the AMD-V (SVM under TCG) tests
#   ovmf                UEFI firmware for QEMU (keel run --uefi)
#   bochs bochsbios vgabios
#                       the VT-x tests (Bochs emulates VMX with EPT)
#   grub-pc-bin         GRUB for BIOS: grub-mkimage -O i386-pc, boot.img
#   grub-efi-amd64-bin  GRUB for UEFI: grub-mkimage -O x86_64-efi
#   xorriso mtools      ISO images (grub-mkrescue) and inspecting FAT images by hand
#   binutils            as and ld, which assemble the test guests (qemu-tests/guests)
#   python3-venv        a virtualenv for schemathesis (PyPI), which tests the HTTP API
#   e2fsprogs           mke2fs -d and debugfs: the guest-disk tests' ext4 images, read back
#   gdisk dosfstools    sgdisk and mkfs.vfat: the GPT boot disk (ESP) rust-hypervisor-firmware
#                       boots in the guest-disk tests
#   kmod                modinfo, to read a kernel module's dependencies by hand
#   sslscan             the TLS scan of the management API (qemu-tests/tests/tls.rs)
#
# Also (with rustup/cargo): the pinned nightly and cargo-fuzz, for the fuzz smoke.
set -euo pipefail

PACKAGES="qemu-system-x86 ovmf bochs bochsbios vgabios grub-pc-bin grub-efi-amd64-bin xorriso mtools binutils python3-venv e2fsprogs gdisk dosfstools kmod sslscan"

die() {
    echo "install-deps: error: $*" >&2
    exit 1
}

if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    die "dpkg/apt-get not found: this script supports Debian and derivatives; install the \
equivalents of: $PACKAGES"
fi

missing=()
for pkg in $PACKAGES; do
    # `dpkg -s` also succeeds for removed packages whose configuration remains: check the state.
    if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed$'; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-deps: all packages present ($PACKAGES)"
else
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        die "not root and sudo not found: as root, run apt-get install ${missing[*]}"
    fi
    echo "install-deps: installing ${missing[*]}"
    if ! "${sudo[@]}" apt-get update; then
        die "apt-get update failed: check the network and /etc/apt/sources.list, then rerun"
    fi
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"; then
        die "apt-get install ${missing[*]} failed (see apt's message above)"
    fi
    echo "install-deps: installed ${missing[*]}"
fi

# The Rust toolchain and the kernel's target come from rust-toolchain.toml; make rustup fetch
# them now rather than in the middle of the first build.
workspace="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if command -v rustup >/dev/null 2>&1; then
    cd "$workspace"
    # rustup >= 1.28 installs the toolchain file's toolchain with a bare `toolchain install`;
    # older ones install it on first use.
    rustup toolchain install >/dev/null 2>&1 || rustup show active-toolchain >/dev/null \
        || die "rustup could not install the toolchain named in rust-toolchain.toml"
    if ! rustup target list --installed | grep -qx 'x86_64-unknown-none'; then
        rustup target add x86_64-unknown-none || die "rustup target add x86_64-unknown-none failed"
    fi
    echo "install-deps: Rust toolchain $(rustup show active-toolchain | cut -d' ' -f1) with x86_64-unknown-none"
    # The guest-disk tests build rust-hypervisor-firmware (../shared/vendor/) with the nightly
    # its own rust-toolchain.toml pins. Its toolchain file also names targets the mirror here
    # does not serve, so install it minimal with rust-src (what -Zbuild-std needs).
    FIRMWARE_TOOLCHAIN="nightly-2025-06-05"
    if ! rustup toolchain list | grep -q "^$FIRMWARE_TOOLCHAIN"; then
        rustup toolchain install "$FIRMWARE_TOOLCHAIN" --profile minimal -c rust-src \
            || die "rustup toolchain install $FIRMWARE_TOOLCHAIN failed (for rust-hypervisor-firmware)"
    fi
    echo "install-deps: $FIRMWARE_TOOLCHAIN for rust-hypervisor-firmware and the fuzz smoke"
    # The fuzz smoke (qemu-tests/tests/fuzz_smoke.rs) builds fuzz/ with cargo-fuzz on that same
    # nightly (libFuzzer needs -Zsanitizer). Pinned, and built from its lock file.
    CARGO_FUZZ_VERSION="0.13.1"
    if ! cargo fuzz --version 2>/dev/null | grep -q "cargo-fuzz $CARGO_FUZZ_VERSION\$"; then
        echo "install-deps: installing cargo-fuzz $CARGO_FUZZ_VERSION"
        cargo install --locked --force cargo-fuzz --version "$CARGO_FUZZ_VERSION" \
            || die "cargo install --locked cargo-fuzz --version $CARGO_FUZZ_VERSION failed"
    fi
    echo "install-deps: $(cargo fuzz --version)"
else
    echo "install-deps: warning: rustup not found; the build needs the toolchain in" \
        "rust-toolchain.toml with target x86_64-unknown-none" >&2
fi

# schemathesis (PyPI) checks the HTTP API against its own OpenAPI document in the tests. It
# goes into a virtualenv under target/ (Debian's system Python refuses pip installs).
SCHEMATHESIS_VERSION="4.32.5"
venv="$workspace/target/schemathesis-venv"
if [ ! -x "$venv/bin/schemathesis" ] \
    || ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "install-deps: installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed: install python3-venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
        || die "pip install schemathesis failed (PyPI unreachable?)"
fi
echo "install-deps: $("$venv/bin/schemathesis" --version)"

# promtool (Debian's `prometheus` package) checks the appliance's /metrics text in
# qemu-tests/tests/metrics.rs. Its own block: the package also brings a Prometheus server,
# which nothing here starts.
if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        die "not root and sudo not found: as root, run apt-get install prometheus (for promtool)"
    fi
    echo "install-deps: installing prometheus (promtool)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends prometheus \
        || { "${sudo[@]}" apt-get update && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends prometheus; } \
        || die "apt-get install prometheus failed (see apt's message above)"
fi
echo "install-deps: $(promtool --version 2>&1 | head -n 1)"

# The web console (issue 17): npm fetches xterm.js for the page at build time
# (web/fetch-assets.sh, pinned by web/package-lock.json); the browser test
# (qemu-tests/tests/web_console.rs) drives Debian's chromium through chromium-driver with
# Selenium from PyPI, in its own virtualenv under target/.
WEB_PACKAGES="npm chromium chromium-driver"
web_missing=()
for pkg in $WEB_PACKAGES; do
    if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed$'; then
        # npm may come from elsewhere (nodesource, nvm): only a missing command counts.
        if [ "$pkg" = npm ] && command -v npm >/dev/null 2>&1; then
            continue
        fi
        web_missing+=("$pkg")
    fi
done
if [ "${#web_missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
    echo "install-deps: installing ${web_missing[*]}"
    "${sudo[@]}" apt-get update || die "apt-get update failed: check the network, then rerun"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${web_missing[@]}" \
        || die "apt-get install ${web_missing[*]} failed (see apt's message above)"
fi
bash "$workspace/web/fetch-assets.sh" || die "web/fetch-assets.sh failed (npm registry unreachable?)"
SELENIUM_VERSION="4.38.0"
web_venv="$workspace/target/selenium-venv"
if ! "$web_venv/bin/python" -c "import selenium, sys; sys.exit(selenium.__version__ != '$SELENIUM_VERSION')" \
    2>/dev/null; then
    echo "install-deps: installing selenium $SELENIUM_VERSION into $web_venv"
    python3 -m venv "$web_venv" || die "python3 -m venv failed: install python3-venv"
    "$web_venv/bin/pip" install --quiet --disable-pip-version-check "selenium==$SELENIUM_VERSION" \
        || die "pip install selenium failed (PyPI unreachable?)"
fi
echo "install-deps: selenium $SELENIUM_VERSION, $(chromium --version 2>/dev/null || echo 'chromium missing')"

# kvm-unit-tests (qemu-tests/src/kut, tests/kvm_unit_tests.rs, the kvm-unit-tests binary):
# built from ../shared/vendor/kvm-unit-tests-1da1819.tar.gz on first use into
# target/kvm-unit-tests/ with ./configure --arch=x86_64 && make, which needs GCC and make
# (binutils is above).
KUT_PACKAGES="gcc make"
kut_missing=()
for pkg in $KUT_PACKAGES; do
    if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed$'; then
        kut_missing+=("$pkg")
    fi
done
if [ "${#kut_missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        kut_sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        kut_sudo=(sudo)
    else
        die "not root and sudo not found: as root, run apt-get install ${kut_missing[*]}"
    fi
    echo "install-deps: installing ${kut_missing[*]} for kvm-unit-tests"
    "${kut_sudo[@]}" apt-get update || die "apt-get update failed (for ${kut_missing[*]})"
    "${kut_sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${kut_missing[@]}" \
        || die "apt-get install ${kut_missing[*]} failed (kvm-unit-tests' build needs them)"
fi
echo "install-deps: gcc and make for kvm-unit-tests present"
