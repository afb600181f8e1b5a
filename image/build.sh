#!/usr/bin/env bash
# Builds the v86box guest image into assets/ from pinned Debian bookworm packages.
#
#   image/build.sh                 everything: kernel, root filesystem, BIOS, manifest
#   image/build.sh --rootfs-only   only the root filesystem (after agent or /init changes);
#                                  keeps assets/bzImage and the BIOS files as they are
#   image/build.sh --update-lock   re-resolve packages.txt to Debian's current versions,
#                                  rewrite packages.lock, then build everything
#   image/build.sh --initrd        also write the whole root filesystem as an initramfs
#                                  (rootfs.cpio.gz, files.initrd); see "Root filesystem" below
#
# Needs Debian 12 (bookworm) and root: it apt-installs its build tools, enables the
# i386 architecture and chowns files inside the image. Work happens in a cache dir
# (V86BOX_IMAGE_CACHE, default /var/cache/v86box-image) and a temp dir; assets/ is
# only touched at the very end, one rename per file, so a failed download or a
# checksum mismatch leaves the committed image as it was.
set -euo pipefail

die() { echo "image/build.sh: error: $*" >&2; exit 1; }
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

MODE=all
UPDATE_LOCK=0
WITH_INITRD=0
for arg in "$@"; do
  case "$arg" in
    --rootfs-only) MODE=rootfs ;;
    --update-lock) UPDATE_LOCK=1 ;;
    --initrd) WITH_INITRD=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) die "unknown option '$arg' (try --help)" ;;
  esac
done

# --- bad input first: say what is needed and stop before doing anything -----------
[ -r /etc/os-release ] && . /etc/os-release
if [ "${ID:-}" != debian ] || [ "${VERSION_CODENAME:-}" != bookworm ]; then
  die "needs Debian 12 (bookworm): the kernel source, the i386 userland and SeaBIOS are pinned to bookworm packages (this host is '${PRETTY_NAME:-unknown}'). Run it in a debian:bookworm container or VM."
fi
[ "$(id -u)" = 0 ] || die "needs root: it runs apt-get install and dpkg --add-architecture i386, and chowns files inside the image. Run: sudo npm run image:build"
[ "$UPDATE_LOCK" = 1 ] && [ "$MODE" = rootfs ] && die "--update-lock and --rootfs-only do not mix: new package versions need a full build"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
ASSETS="$REPO/assets"
CACHE="${V86BOX_IMAGE_CACHE:-/var/cache/v86box-image}"
LOCK="$HERE/packages.lock"

# Everything that ends up in an output gets the same clock, owner and order.
export SOURCE_DATE_EPOCH=1767225600            # 2026-01-01 00:00:00 UTC
export KBUILD_BUILD_TIMESTAMP="Thu Jan  1 00:00:00 UTC 2026"
export KBUILD_BUILD_USER=v86box KBUILD_BUILD_HOST=v86box KBUILD_BUILD_VERSION=1
export LC_ALL=C TZ=UTC
umask 022

# The only things outside Debian: the v86 version the image is tested with and the
# agent protocol version /init hands over to (read by the SDK from manifest.json).
V86_VERSION=0.5.462
AGENT_PROTOCOL=1
# Root filesystem: a read-only squashfs that v86 serves as its first IDE disk
# (files.rootfs -> V86 option `hda`); /init puts a tmpfs overlay on top. Pages are read
# when used, so boot does not pay for the ~40 MB userland. The squashfs is uncompressed:
# the emulated CPU spent ~45 instructions per byte unpacking zstd blocks (~180 M
# instructions, 1.7-2.7 s, before the first command after a boot answered). It ships
# brotli-compressed (rootfs.squashfs.br, ~9 MB) and the SDK unpacks it once on the host
# (~0.3 s) into its assets dir, from where each sandbox reads it. Measured alternative:
# the same tree as one initramfs (--initrd) spent ~6-9 s of boot unpacking it.
# The command line serves both: with an initrd the kernel runs rdinit=/init from it and
# ignores root=; without one it mounts /dev/sda and runs init=/init.
# Guest RAM (MiB). The disk image boots with as little as 24 MiB (bench/boot.ts --memory,
# agent READY at 24, 32, 48, 64); 64 is the smallest power of two that also leaves
# room for commands (the overlay's writes and the page cache live in RAM). With
# --initrd, v86 copies the initrd to 64 MiB, so RAM must exceed 64 MiB + initrd: 128.
MEMORY_MB=64
MEMORY_MB_WITH_INITRD=128
# Kernel command line, passed by the SDK to v86 verbatim (see image/README.md for why
# each option is there).
CMDLINE="console=ttyS0 root=/dev/sda rootfstype=squashfs ro init=/init rdinit=/init loglevel=4 tsc=reliable hugepages=1"

T0=$(date +%s)
mkdir -p "$CACHE"/{debs,kernel,unpacked}
WORK=$(mktemp -d /tmp/v86box-image.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# --- build tools ---------------------------------------------------------------------
HOST_TOOLS=(build-essential bc flex bison libelf-dev libssl-dev gcc-multilib cpio xz-utils gzip zstd squashfs-tools dpkg-dev nodejs
            autoconf automake libtool curl)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
install_tools() {
  local missing=() p
  for p in "${HOST_TOOLS[@]}"; do
    installed "$p" || missing+=("$p")
  done
  local need_update=0
  if ! dpkg --print-foreign-architectures | grep -qx i386; then
    log "enabling the i386 architecture"
    dpkg --add-architecture i386
    need_update=1
  fi
  ls /var/lib/apt/lists/*_binary-i386_Packages* >/dev/null 2>&1 || need_update=1
  [ ${#missing[@]} -gt 0 ] && need_update=1
  [ "$UPDATE_LOCK" = 1 ] && need_update=1
  if [ "$need_update" = 1 ]; then
    # A partial failure (one mirror mid-sync) is not fatal: every .deb we use is
    # checked against packages.lock anyway.
    apt-get update -qq || log "warning: apt-get update reported errors; continuing (checksums still apply)"
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing build tools: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
install_tools

# bash is built natively for i686 (build_bash: its configure must run its probes), so
# this host must run i386 programs. A kernel without IA32 emulation (some VMs) cannot:
# then qemu's user-mode i386 emulator is registered with binfmt_misc to run them.
ensure_i386_runs() {
  local probe="$CACHE/i386-probe"
  mkdir -p "$CACHE"
  printf 'int main(void){return 0;}\n' | gcc -m32 -static -x c -o "$probe" - || die "gcc -m32 cannot build i386 programs"
  "$probe" 2>/dev/null && return 0
  log "this kernel does not run i386 programs: registering qemu-i386 with binfmt_misc"
  installed qemu-user-static ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  [ -e /proc/sys/fs/binfmt_misc/qemu-i386 ] ||
    printf '%s' ':qemu-i386:M::\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x03\x00:\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-i386-static:F' \
      > /proc/sys/fs/binfmt_misc/register
  "$probe" || die "cannot run i386 programs, even through qemu-i386 (binfmt_misc): bash's build needs to"
}
ensure_i386_runs

# --- the lock: package version arch sha256 source sourceVersion role ------------------
# role: rootfs (unpacked into the guest), kernel (linux-source), bios (seabios),
# bash-source (the .dsc of the bash that build_bash builds; sha256 is the .dsc's),
# jq-source (the same for jq, from trixie: build_jq), jq-build (.debs build_jq unpacks).
BUILD_INPUTS=("linux-source-6.1 all kernel" "seabios all bios" "libonig-dev i386 jq-build")
# jq comes from trixie's source package (build_jq): bookworm has only 1.6. Its pool path
# and version, pinned; --update-lock records the .dsc's sha256.
JQ_SOURCE_VERSION=1.7.1-6+deb13u3
JQ_POOL=http://deb.debian.org/debian/pool/main/j/jq

deb_name() { # package version arch -> the file name apt-get download gives it
  local v=${2//:/%3a}; echo "${1}_${v}_${3}.deb"
}

# download_source package version: the .dsc path (with its .orig and .debian files
# beside it, in the cache) on stdout. apt-get source needs deb-src lines: a private
# sources list and lists dir, so the host's apt configuration is left alone.
download_source() {
  local dir="$CACHE/src/${1}_$2" lists="$CACHE/src/lists"
  local dsc; dsc="$dir/${1}_${2#*:}.dsc"
  if [ ! -f "$dsc" ]; then
    mkdir -p "$lists/partial" "$dir.tmp"; chown _apt "$dir.tmp" 2>/dev/null || true
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" > "$CACHE/src/sources.list"
    local apt_opts=(-o Dir::Etc::SourceList="$CACHE/src/sources.list" -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$lists")
    apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 || true
    (cd "$dir.tmp" && apt-get "${apt_opts[@]}" source --download-only -qq "$1=$2" >/dev/null 2>&1) ||
      die "apt-get source $1=$2 failed (no network, or Debian no longer carries that version). assets/ is unchanged."
    rm -rf "$dir"; mv "$dir.tmp" "$dir"
  fi
  echo "$dsc"
}

# download_pool_source package version pool_url: the .dsc path on stdout, with the files
# it lists beside it, fetched from Debian's pool by URL (a version from another suite,
# which apt's bookworm lists do not name). dpkg-source -x checks them against the .dsc.
download_pool_source() {
  local dir="$CACHE/src/${1}_$2" dsc="${1}_${2#*:}.dsc"
  if [ ! -f "$dir/$dsc" ]; then
    rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
    curl -sfL -o "$dir.tmp/$dsc" "$3/${dsc//+/%2b}" ||
      die "download of $3/$dsc failed (no network, or Debian's pool no longer has that version). assets/ is unchanged."
    local f
    for f in $(awk '/^Checksums-Sha256:/ { on = 1; next } /^[^ ]/ { on = 0 } on && NF == 3 { print $3 }' "$dir.tmp/$dsc"); do
      curl -sfL -o "$dir.tmp/$f" "$3/${f//+/%2b}" || die "download of $3/$f failed. assets/ is unchanged."
    done
    rm -rf "$dir"; mv "$dir.tmp" "$dir"
  fi
  echo "$dir/$dsc"
}

update_lock() {
  log "resolving current versions for packages.lock"
  local dl="$WORK/lockdl"; mkdir -p "$dl"; chown _apt "$dl" 2>/dev/null || true
  local entries=() p
  while read -r p; do entries+=("$p i386 rootfs"); done < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$HERE/packages.txt")
  entries+=("${BUILD_INPUTS[@]}")
  {
    echo "# Generated by image/build.sh --update-lock. Every .deb is checked against this on each build."
    printf '# package\tversion\tarch\tsha256\tsource\tsourceVersion\trole\n'
    local e name arch role spec f ver src srcver
    for e in "${entries[@]}"; do
      read -r name arch role <<<"$e"
      spec=$name; [ "$arch" = i386 ] && spec="$name:i386"
      # Architecture-independent packages (terminfo, magic data) have no :i386 variant.
      (cd "$dl" && { apt-get download -qq "$spec" >/dev/null 2>&1 || apt-get download -qq "$name" >/dev/null 2>&1; }) ||
        die "apt-get download $spec failed"
      f=$(ls -t "$dl"/"${name}"_*.deb | head -1)
      ver=$(dpkg-deb -f "$f" Version)
      src=$(dpkg-deb -f "$f" Source); srcver=$ver
      if [ -z "$src" ]; then src=$name
      elif [[ "$src" == *"("* ]]; then srcver=${src#*(}; srcver=${srcver%)}; src=${src%% *}
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$ver" "$(dpkg-deb -f "$f" Architecture)" \
        "$(sha256sum "$f" | cut -d' ' -f1)" "$src" "$srcver" "$role"
      mv "$f" "$CACHE/debs/"
    done
    # /usr/bin/bash is built from the source package of the bash .deb (see build_bash).
    # (Its Source field names the source version when it differs from the .deb's own.)
    local bash_deb bash_srcver dsc
    bash_deb=$(ls "$CACHE"/debs/bash_*_i386.deb | sort -V | tail -1)
    bash_srcver=$(dpkg-deb -f "$bash_deb" Source | sed -n 's/^bash (\(.*\))$/\1/p')
    [ -n "$bash_srcver" ] || bash_srcver=$(dpkg-deb -f "$bash_deb" Version)
    dsc=$(download_source bash "$bash_srcver")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' bash "$bash_srcver" source "$(sha256sum "$dsc" | cut -d' ' -f1)" bash "$bash_srcver" bash-source
    dsc=$(download_pool_source jq "$JQ_SOURCE_VERSION" "$JQ_POOL")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' jq "$JQ_SOURCE_VERSION" source "$(sha256sum "$dsc" | cut -d' ' -f1)" jq "$JQ_SOURCE_VERSION" jq-source
  } > "$WORK/packages.lock"
  mv "$WORK/packages.lock" "$LOCK"
}
[ "$UPDATE_LOCK" = 1 ] && update_lock
[ -r "$LOCK" ] || die "$LOCK is missing: run image/build.sh --update-lock once"

# fetch_deb package version arch sha256: the verified .deb's path on stdout.
fetch_deb() {
  local f="$CACHE/debs/$(deb_name "$1" "$2" "$3")" spec="$1=$2"
  [ "$3" = i386 ] && spec="$1:i386=$2"
  if [ -f "$f" ] && [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$4" ]; then echo "$f"; return; fi
  # apt's own cache may already hold it (e.g. linux-source installed by hand).
  local a="/var/cache/apt/archives/$(deb_name "$1" "$2" "$3")"
  if [ -f "$a" ] && [ "$(sha256sum "$a" | cut -d' ' -f1)" = "$4" ]; then cp "$a" "$f"; echo "$f"; return; fi
  local dl; dl=$(mktemp -d "$WORK/dl.XXXX"); chown _apt "$dl" 2>/dev/null || true
  (cd "$dl" && apt-get download -qq "$spec" >/dev/null 2>&1) ||
    die "download of $spec failed (no network, or Debian no longer carries that version: then run image/build.sh --update-lock and review the diff of image/packages.lock). assets/ is unchanged."
  local got; got=$(sha256sum "$dl"/*.deb | cut -d' ' -f1)
  [ "$got" = "$4" ] || die "checksum mismatch for $spec: packages.lock says $4, the download is $got. assets/ is unchanged."
  mv "$dl"/*.deb "$f"; echo "$f"
}

# lock_rows ROLE -> "package version arch sha256 source sourceVersion" lines
lock_rows() { awk -F'\t' -v r="$1" '!/^#/ && $7 == r { print $1, $2, $3, $4, $5, $6 }' "$LOCK"; }

# Fetch and verify everything up front: a missing or altered .deb aborts here.
log "fetching and verifying .debs against packages.lock"
declare -A DEB
while read -r pkg ver arch sha src srcver; do
  DEB[$pkg]=$(fetch_deb "$pkg" "$ver" "$arch" "$sha")
done < <(lock_rows rootfs; lock_rows jq-build; if [ "$MODE" = all ]; then lock_rows kernel; lock_rows bios; fi)
# check_dsc path sha256: dies unless the downloaded .dsc is the one packages.lock pins
# (dpkg-source -x then checks the files it lists against it).
check_dsc() {
  local got; got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$2" ] || die "checksum mismatch for ${1##*/}: packages.lock says $2, the download is $got. assets/ is unchanged."
}
read -r _ BASH_SRC_VERSION _ BASH_DSC_SHA _ _ < <(lock_rows bash-source)
[ -n "${BASH_DSC_SHA:-}" ] || die "packages.lock has no bash-source row: run image/build.sh --update-lock"
BASH_DSC=$(download_source bash "$BASH_SRC_VERSION")
check_dsc "$BASH_DSC" "$BASH_DSC_SHA"
read -r _ JQ_SRC_VERSION _ JQ_DSC_SHA _ _ < <(lock_rows jq-source)
[ -n "${JQ_DSC_SHA:-}" ] || die "packages.lock has no jq-source row: run image/build.sh --update-lock"
JQ_DSC=$(download_pool_source jq "$JQ_SRC_VERSION" "$JQ_POOL")
check_dsc "$JQ_DSC" "$JQ_DSC_SHA"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# recipe_key FUNCTION FILE...: the cache key of what FUNCTION builds from FILEs (and
# a "pinned inputs" line on stdin): a cached build is reused only when none of them,
# nor FUNCTION's own text, changed. Log lines are left out, so rewording them does not
# force a rebuild.
recipe_key() {
  local fn="$1"; shift
  cat "$@" - <(sed -n "/^$fn()/,/^}/p" "$0" | grep -v '^ *log ') | sha256sum | cut -c1-16
}

# --- kernel ----------------------------------------------------------------------------
OUT="$WORK/out"; mkdir -p "$OUT"
build_kernel() {
  read -r _ kver _ ksha _ _ < <(lock_rows kernel)
  local key
  key=$(echo "$ksha $KBUILD_BUILD_TIMESTAMP" | recipe_key build_kernel "$HERE/kernel.fragment" "$HERE"/patches/*.patch)
  local kdir="$CACHE/kernel/$key"
  if [ -f "$kdir/bzImage" ]; then
    log "kernel: cached ($kdir)"
  else
    log "kernel: building linux $kver (i386 tinyconfig + image/kernel.fragment), ~7-10 min on 2 cores"
    rm -rf "$kdir"; mkdir -p "$kdir"
    local src="$kdir/src"; mkdir -p "$src"
    dpkg-deb --fsys-tarfile "${DEB[linux-source-6.1]}" | tar -xO ./usr/src/linux-source-6.1.tar.xz |
      tar -xJ -C "$src" --strip-components=1
    local p; for p in "$HERE"/patches/*.patch; do patch -s -d "$src" -p1 < "$p"; done
    make -s -C "$src" ARCH=i386 tinyconfig >/dev/null
    (cd "$src" && scripts/kconfig/merge_config.sh -m .config "$HERE/kernel.fragment" >/dev/null)
    make -s -C "$src" ARCH=i386 olddefconfig >/dev/null
    check_kconfig "$src/.config"
    make -s -C "$src" ARCH=i386 -j"$(nproc)" bzImage >"$kdir/build.log" 2>&1 ||
      { tail -30 "$kdir/build.log" >&2; die "kernel build failed (log: $kdir/build.log)"; }
    cp "$src/arch/x86/boot/bzImage" "$kdir/bzImage"; cp "$src/.config" "$kdir/config"
    rm -rf "$src"   # 1+ GB; the key above says when to rebuild
  fi
  cp "$kdir/bzImage" "$OUT/bzImage"
  local size; size=$(stat -c %s "$OUT/bzImage")
  [ "$size" -le $((2 * 1024 * 1024)) ] || die "bzImage is $size bytes, over the 2 MB budget"
}

# Each option in the fragment must have landed: =y/=N/="s" exactly, =n as "not set".
check_kconfig() {
  local cfg="$1" bad=0 k v
  while IFS='=' read -r k v; do
    if [ "$v" = n ]; then
      grep -q "^$k=" "$cfg" && { echo "  $k should be off, is $(grep "^$k=" "$cfg")" >&2; bad=1; }
    else
      grep -qx "$k=$v" "$cfg" || { echo "  $k=$v requested, got: $(grep -E "^(# )?$k[= ]" "$cfg" || echo absent)" >&2; bad=1; }
    fi
  done < <(grep -E '^CONFIG_' "$HERE/kernel.fragment")
  [ "$bad" = 0 ] || die "kernel .config lacks requested options (a dependency is missing; see above)"
  log "kernel: all $(grep -c '^CONFIG_' "$HERE/kernel.fragment") fragment options verified in .config"
}

# --- bash, with the fork server ------------------------------------------------------
# Debian's bash source package (its patches applied by dpkg-source, which checks the
# .orig and .debian files against the .dsc's sums) plus image/bash/fork-server.patch,
# built static like Debian's bash-static (same configure options; the bundled termcap
# instead of libtinfo). Why: image/bash/README.md. Built as a native i686 build, not a
# cross build: a cross configure cannot run its probes and assumes the worst, e.g. bash's
# own getcwd, which fails on the guest's overlayfs (readdir's inode numbers differ
# from stat's).
build_bash() {
  local key
  key=$(echo "$BASH_DSC_SHA $SOURCE_DATE_EPOCH" | recipe_key build_bash "$HERE"/bash/*.patch)
  local bdir="$CACHE/bash/$key"
  if [ -f "$bdir/bash" ]; then
    log "bash: cached ($bdir)"
  else
    log "bash: building $BASH_SRC_VERSION with the fork server (static i386), ~1-2 min"
    rm -rf "$bdir"; mkdir -p "$bdir"
    local src="$bdir/src" build="$bdir/build"
    dpkg-source -x "$BASH_DSC" "$src" >/dev/null 2>&1 || die "dpkg-source -x $BASH_DSC failed (corrupt source files?)"
    local p; for p in "$HERE"/bash/*.patch; do patch -s -d "$src" -p1 < "$p"; done
    mkdir -p "$build"
    # Linked so the fork server can put its code on one huge page (image/bash/README.md):
    # code and read-only data in one segment at a 4 MiB boundary, data in the next 4 MiB
    # (the file gets ~1.7 MB of zeros between them; squashfs stores them as holes).
    (cd "$build" && CC="gcc -m32" CFLAGS="-O2 -DV86BOX_FORK_SERVER -ffile-prefix-map=$bdir=." \
      LDFLAGS="-Wl,-Ttext-segment=0x08000000 -Wl,-z,max-page-size=0x400000 -Wl,-z,noseparate-code" \
      ../src/configure --build=i686-pc-linux-gnu --host=i686-pc-linux-gnu --enable-largefile --prefix=/usr \
        --without-bash-malloc --enable-static-link bash_cv_termcap_lib=gnutermcap >"$bdir/build.log" 2>&1 &&
      make -j"$(nproc)" bash >>"$bdir/build.log" 2>&1) ||
      { tail -30 "$bdir/build.log" >&2; die "bash build failed (log: $bdir/build.log)"; }
    strip -o "$bdir/bash" "$build/bash"
    # (dpkg-source leaves a copy of the .orig tarball beside the tree it unpacked.)
    rm -rf "$src" "$build" "$bdir"/*.tar.*
  fi
  cp "$bdir/bash" "$WORK/bash"
}

# --- jq 1.7 ----------------------------------------------------------------------------
# bookworm's jq 1.6 links all ~200 of its built-in definitions at every start: ~0.65 s of
# emulated CPU for any filter (16 ms natively; 1.7 takes 3). jq 1.7 binds only those a
# program uses, and bookworm has no 1.7, so /usr/bin/jq is built from trixie's source
# package (Debian's patches applied by dpkg-source, which checks the files against the
# pinned .dsc), for i386 against the image's glibc and libonig5 (bookworm's libonig-dev
# unpacked for its headers, not installed), with libjq linked in.
build_jq() {
  local key
  key=$(lock_rows jq-build | cat - <(echo "$JQ_DSC_SHA $SOURCE_DATE_EPOCH ${DEB[libonig5]##*/}") | recipe_key build_jq)
  local jdir="$CACHE/jq/$key"
  if [ -f "$jdir/jq" ]; then
    log "jq: cached ($jdir)"
  else
    log "jq: building $JQ_SRC_VERSION (i386), ~1 min"
    rm -rf "$jdir"; mkdir -p "$jdir"
    local src="$jdir/src" onig="$jdir/onig"
    dpkg-source -x "$JQ_DSC" "$src" >/dev/null 2>&1 || die "dpkg-source -x $JQ_DSC failed (corrupt source files?)"
    dpkg -x "${DEB[libonig-dev]}" "$onig"; dpkg -x "${DEB[libonig5]}" "$onig"
    # Debian's patches change configure.ac and Makefile.am; jq's own parser and lexer
    # sources come generated. builtin.inc is made before the parallel make needs it.
    # `jq --build-configuration` prints these options: relative paths keep the binary the
    # same wherever the cache is (an in-tree build names its sources relatively anyway).
    (cd "$src" && autoreconf -fi && CC="gcc -m32" CFLAGS="-O2" \
      CPPFLAGS="-I../onig/usr/include" LDFLAGS="-L../onig/usr/lib/i386-linux-gnu" \
      ./configure --build=i686-pc-linux-gnu --host=i686-pc-linux-gnu --prefix=/usr --disable-docs \
        --disable-valgrind --disable-maintainer-mode --disable-shared --enable-static --with-oniguruma=yes &&
      make src/builtin.inc src/version.h && make -j"$(nproc)" jq) >"$jdir/build.log" 2>&1 ||
      { tail -30 "$jdir/build.log" >&2; die "jq build failed (log: $jdir/build.log)"; }
    strip -o "$jdir/jq" "$src/jq"
    rm -rf "$src" "$onig" "$jdir"/*.tar.*
  fi
  cp "$jdir/jq" "$WORK/jq"
}

# --- root filesystem -------------------------------------------------------------------
build_rootfs() {
  local key; key=$(lock_rows rootfs | sha256sum | cut -c1-16)
  local base="$CACHE/unpacked/$key"
  if [ ! -f "$base/.done" ]; then
    log "rootfs: unpacking $(lock_rows rootfs | wc -l) .debs"
    rm -rf "$base"; mkdir -p "$base/root"
    local pkg
    while read -r pkg _; do dpkg -x "${DEB[$pkg]}" "$base/root"; done < <(lock_rows rootfs)
    touch "$base/.done"
  fi
  local R="$WORK/rootfs"
  cp -a "$base/root" "$R"
  # /init is freestanding C, not shell: see the top of image/init.c for the numbers.
  gcc -m32 -static -nostdlib -ffreestanding -fno-stack-protector -fno-asynchronous-unwind-tables \
    -fno-pic -no-pie -Os -s -std=gnu11 -Wall -Wextra -ffile-prefix-map="$HERE"=. \
    -Wl,--build-id=none -o "$WORK/init" "$HERE/init.c"
  build_bash
  build_jq
  bash "$HERE/rootfs.sh" "$R" "$HERE" "$WORK/init" "$WORK/bash" "$WORK/jq"

  # The agent (issue #3) becomes PID 1 when present; /init checks for it.
  if [ -f "$HERE/agent/agent.c" ]; then
    log "rootfs: building the agent (gcc -m32 -static)"
    if [ -f "$HERE/agent/Makefile" ]; then
      make -s -C "$HERE/agent" agent-i386 OUT="$WORK/v86box-agent" >&2
    else
      gcc -m32 -static -O2 -s -std=gnu11 -D_FILE_OFFSET_BITS=64 -D_TIME_BITS=64 \
        -ffile-prefix-map="$HERE/agent"=. -Wl,--build-id=none -o "$WORK/v86box-agent" "$HERE/agent/agent.c"
    fi
    install -m 0755 "$WORK/v86box-agent" "$R/usr/sbin/v86box-agent"
  fi

  check_needed "$R"

  # Fixed owner, clock and order so the images are byte-identical on every build.
  chown -hR 0:0 "$R"; chown -h 1000:1000 "$R/home/user"
  find "$R" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"
  # squashfs: mksquashfs sorts directory entries itself and is reproducible when the
  # filesystem and file times are fixed. Nothing in it is compressed (-noI -noD -noF
  # -noX); `-comp zstd` only names a compressor the kernel has (it checks at mount).
  # Compressed per block it was: gzip 14.7 MB, lz4 20.6 MB, xz 12.3 MB, zstd 13.4 MB;
  # the whole uncompressed image: gzip -9 14.6 MB, brotli 9.0 MB (window 2^24).
  # (mksquashfs takes SOURCE_DATE_EPOCH from the environment for all its timestamps.)
  mksquashfs "$R" "$WORK/rootfs.squashfs" -comp zstd -noI -noD -noF -noX -b 128K -noappend -no-xattrs -quiet -no-progress >/dev/null
  log "rootfs: $(du -sh --apparent-size "$R" | cut -f1) unpacked, squashfs $(stat -c %s "$WORK/rootfs.squashfs") B; brotli (~3 min)"
  node -e '
    const { readFileSync, writeFileSync } = require("node:fs"); const zlib = require("node:zlib");
    const raw = readFileSync(process.argv[1]);
    const { BROTLI_PARAM_QUALITY: Q, BROTLI_PARAM_LGWIN: W, BROTLI_PARAM_SIZE_HINT: H } = zlib.constants;
    writeFileSync(process.argv[2], zlib.brotliCompressSync(raw, { params: { [Q]: 11, [W]: 24, [H]: raw.length } }));
  ' "$WORK/rootfs.squashfs" "$OUT/rootfs.squashfs.br"
  log "rootfs: rootfs.squashfs.br $(stat -c %s "$OUT/rootfs.squashfs.br") B"
  [ "$(stat -c %s "$OUT/rootfs.squashfs.br")" -le $((14 * 1024 * 1024)) ] || die "compressed root filesystem over 14 MB"
  if [ "$WITH_INITRD" = 1 ]; then
    (cd "$R" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
       cpio -o -H newc --reproducible --quiet) > "$WORK/rootfs.cpio"
    gzip -9 -n < "$WORK/rootfs.cpio" > "$OUT/rootfs.cpio.gz"
    log "rootfs: initramfs cpio $(stat -c %s "$WORK/rootfs.cpio") B, gzip $(stat -c %s "$OUT/rootfs.cpio.gz") B"
  fi
}

# Every ELF in the image (programs and the libraries themselves) must find its NEEDED
# libraries inside the image. One readelf over all candidates: per-file forks are slow.
check_needed() {
  local R="$1" missing
  missing=$(
    { find "$R/usr/lib/i386-linux-gnu" "$R/usr/lib" -maxdepth 1 -name '*.so*' -printf 'HAVE %f\n'
      # readelf fails on the non-ELF files (scripts) and names files only when given
      # several: /init (static, needs nothing) goes first in every batch.
      find "$R" \( -type f -perm /111 -o -type f -name '*.so*' \) -print0 |
        xargs -0 readelf -d "$R/init" 2>/dev/null | sed -n -e 's/^File: /FILE /p' -e 's/.*(NEEDED).*\[\(.*\)\]/NEED \1/p' || true
    } | awk -v root="$R" '
      $1 == "HAVE" { have[$2] = 1; next }
      $1 == "FILE" { file = substr($2, length(root) + 1); next }
      $1 == "NEED" { need[file " needs " $2] = $2 }
      END { for (k in need) if (!(need[k] in have)) print "  " k }' | sort)
  [ -z "$missing" ] || { echo "$missing" >&2; die "shared libraries missing from the image (add their packages to packages.txt)"; }
}

# --- BIOS ------------------------------------------------------------------------------
build_bios() {
  mkdir -p "$WORK/seabios"
  dpkg -x "${DEB[seabios]}" "$WORK/seabios"
  cp "$WORK/seabios/usr/share/seabios/bios.bin" "$OUT/seabios.bin"
  cp "$WORK/seabios/usr/share/seabios/vgabios-stdvga.bin" "$OUT/vgabios.bin"
}

if [ "$MODE" = all ]; then
  build_kernel
  build_bios
else
  for f in bzImage seabios.bin vgabios.bin manifest.json; do
    [ -f "$ASSETS/$f" ] || die "--rootfs-only needs an existing assets/$f: run a full image/build.sh first"
    [ "$f" = manifest.json ] || cp "$ASSETS/$f" "$OUT/$f"
  done
  # Keep the published shape: an image that had an initrd gets a new one too.
  if grep -q '"initrd"' "$ASSETS/manifest.json"; then WITH_INITRD=1; fi
fi
build_rootfs

# --- manifest and licences -------------------------------------------------------------
log "writing manifest.json and LICENSES.md"
lock_rows rootfs > "$WORK/rootfs.rows"; lock_rows kernel > "$WORK/kernel.rows"; lock_rows bios > "$WORK/bios.rows"
lock_rows bash-source > "$WORK/bash-source.rows"; lock_rows jq-source > "$WORK/jq-source.rows"
[ "$WITH_INITRD" = 1 ] && MEMORY_MB=$MEMORY_MB_WITH_INITRD
node "$HERE/manifest.mjs" "$OUT" "$WORK" "$V86_VERSION" "$AGENT_PROTOCOL" "$MEMORY_MB" "$CMDLINE"

# --- publish: one rename per file, the manifest last -----------------------------------
mkdir -p "$ASSETS"
PUBLISH=(bzImage rootfs.squashfs.br seabios.bin vgabios.bin LICENSES.md)
[ "$WITH_INITRD" = 1 ] && PUBLISH+=(rootfs.cpio.gz)
for f in "${PUBLISH[@]}" manifest.json; do
  cp "$OUT/$f" "$ASSETS/.$f.new" && mv -f "$ASSETS/.$f.new" "$ASSETS/$f"
done
# An initrd from an earlier --initrd build is no longer described by the manifest, nor
# the zstd squashfs of builds before the uncompressed one.
[ "$WITH_INITRD" = 1 ] || rm -f "$ASSETS/rootfs.cpio.gz"
rm -f "$ASSETS/rootfs.squashfs"
log "done in $(( $(date +%s) - T0 )) s:"
(cd "$ASSETS" && sha256sum "${PUBLISH[@]}" && ls -l "${PUBLISH[@]}") >&2
