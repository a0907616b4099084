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
#   prometheus          promtool, which checks the appliance's /metrics text
#                       (qemu-tests/tests/metrics.rs; the server it also brings is not started)
#   npm                 fetches xterm.js for the web page at build time (web/fetch-assets.sh,
#                       pinned by web/package-lock.json)
#   chromium chromium-driver
#                       the web console's browser test (qemu-tests/tests/web_console.rs,
#                       Selenium from PyPI in its own virtualenv, below)
#   gcc make            build kvm-unit-tests from ../shared/vendor into target/kvm-unit-tests/
#                       (qemu-tests/src/kut, tests/kvm_unit_tests.rs)
#
# Also (with rustup/cargo): the pinned nightly and cargo-fuzz, for the fuzz smoke.
set -euo pipefail

PACKAGES="qemu-system-x86 ovmf bochs bochsbios vgabios grub-pc-bin grub-efi-amd64-bin xorriso mtools binutils python3-venv e2fsprogs gdisk dosfstools kmod sslscan prometheus npm chromium chromium-driver gcc make"

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
    # npm may come with a nodejs from elsewhere (nodesource, nvm), which Debian's npm
    # conflicts with: only a missing command counts.
    if [ "$pkg" = npm ] && command -v npm >/dev/null 2>&1; then
        continue
    fi
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

echo "install-deps: $(promtool --version 2>&1 | head -n 1)"

# The web console's assets (xterm.js from npm) and the browser test's Selenium (PyPI).
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
