#!/usr/bin/env bash
# Installs what building, testing and running lenet needs on a Debian/Ubuntu
# machine: QEMU for the Cortex-M4 emulation, the Fashion-MNIST dataset
# package, ARM binutils (ELF sizes), and the Rust target for the firmware.
# Idempotent: it skips what is already there.
set -euo pipefail

need=()
command -v qemu-system-arm >/dev/null || need+=(qemu-system-arm)
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v arm-none-eabi-size >/dev/null || need+=(binutils-arm-none-eabi)
command -v curl >/dev/null || need+=(curl)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)

if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${need[*]}"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi

if ! command -v cargo >/dev/null; then
    echo "setup: installing Rust (rustup)"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
# rust-toolchain.toml names the components and the thumbv7em target; make
# sure they are present even with an older rustup that does not auto-install.
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add thumbv7em-none-eabihf >/dev/null
