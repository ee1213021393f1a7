# Sourced by the benchmarks that run the lightly replica: extracts the CIFAR-10 JPEG copy
# into $CIFAR_DIR (default /tmp/cifar10) if it is not there, and sets $shared, $cifar and
# the replica's $PEER_PY (../shared/bench/lightly_env.sh).
shared=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../shared" && pwd)
cifar=${CIFAR_DIR:-/tmp/cifar10}
if [[ ! -d $cifar/train ]]; then
  mkdir -p "$cifar" && tar -xzf "$shared/data/cifar10-jpeg.tar.gz" -C "$cifar"
fi
# shellcheck source=/dev/null
source "$shared/bench/lightly_env.sh"
