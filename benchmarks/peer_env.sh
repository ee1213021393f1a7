# Sourced by the benchmarks that run the lightly replica (speed/speed_vs_lightly.sh,
# quality/quality_vs_lightly.sh, quality/quality_variations.sh). First it checks that the
# replica (../shared/bench from the repository root, or $SHARED_DIR/bench) and the CIFAR-10
# copy are there, and stops the calling script with one line naming what is missing (exit
# 2). Then it extracts the CIFAR-10 JPEG copy into $CIFAR_DIR (default /tmp/cifar10) if it
# is not there, and sets $shared, $cifar, $bench (this folder) and the replica's $PEER_PY.
bench=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
shared=${SHARED_DIR:-$(dirname "$(dirname "$bench")")/shared}
cifar=${CIFAR_DIR:-/tmp/cifar10}
for needed in bench/lightly_env.sh bench/lightly_cifar_knn.py; do
  if [[ ! -f $shared/$needed ]]; then
    echo "$(basename "$0"): needs $shared/$needed (the lightly replica, ../shared/bench); not found" >&2
    exit 2
  fi
done
if [[ ! -d $cifar/train && ! -f $shared/data/cifar10-jpeg.tar.gz ]]; then
  echo "$(basename "$0"): needs $shared/data/cifar10-jpeg.tar.gz (or CIFAR_DIR=a folder with train/); not found" >&2
  exit 2
fi
if [[ ! -d $cifar/train ]]; then
  mkdir -p "$cifar" && tar -xzf "$shared/data/cifar10-jpeg.tar.gz" -C "$cifar"
fi
# shellcheck source=/dev/null
source "$shared/bench/lightly_env.sh"
