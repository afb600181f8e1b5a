#!/usr/bin/env bash
# Turns the unpacked Debian i386 packages in $1 into the guest root filesystem:
# merged /usr, pruned docs/locales, the links dpkg's maintainer scripts would have
# made, the v86box skeleton (image/skel/) and /init (the binary built from
# image/init.c, $3), bash and jq (built by build.sh, $4 and $5). Called by build.sh.
set -euo pipefail
R="$1" HERE="$2" INIT_BIN="$3" BASH_BIN="$4" JQ_BIN="$5"
cd "$R"

# --- merged /usr, as on any bookworm system (usrmerge does this at install time) ------
for d in bin sbin lib; do
  if [ -d "$d" ] && [ ! -L "$d" ]; then
    mkdir -p "usr/$d"
    # No package ships the same path in both places in bookworm; fail if one does.
    (cd "$d" && find . -mindepth 1 \( -type f -o -type l \) -printf '%P\n') | while read -r f; do
      [ -e "usr/$d/$f" ] || [ -L "usr/$d/$f" ] && { echo "usrmerge conflict: $d/$f" >&2; exit 1; }
      mkdir -p "usr/$d/$(dirname "$f")"; mv "$d/$f" "usr/$d/$f"
    done
    rm -rf "$d"; ln -s "usr/$d" "$d"
  fi
done

# --- prune: documentation, translations, packaging leftovers ---------------------------
rm -rf usr/share/doc usr/share/man usr/share/info usr/share/locale usr/share/lintian \
       usr/share/bug usr/share/bash-completion usr/share/menu usr/share/initramfs-tools \
       usr/share/common-licenses usr/share/debianutils usr/share/util-linux \
       usr/share/readline usr/share/doc-base usr/share/gdb usr/share/perl5 \
       usr/lib/mime usr/lib/systemd lib/systemd etc/init.d etc/cron.* etc/logrotate.d \
       etc/systemd etc/default etc/ld.so.conf.d/zz_i386-biarch-compat.conf \
       usr/lib/i386-linux-gnu/gconv usr/libexec/getconf \
       usr/lib/i386-linux-gnu/audit usr/share/ncurses
# Locales: only C.UTF-8 (glibc's built-in C locale needs no files), as a locale-archive
# (made by the build host's localedef: the format is the same for i386). From the
# C.utf8 directory every process mapped one file per category, 12 mappings; from the
# archive it maps one. So each program start opens and maps 1 file instead of 12, and a
# fork copies (an exit tears down) 11 fewer mappings: the fork server's 20 became 9,
# ~8 % fewer emulated instructions per exec("true") (docs/profiling.md).
find usr/lib/locale -mindepth 1 -maxdepth 1 ! -name C.utf8 -exec rm -rf {} + 2>/dev/null || true
localedef --prefix="$PWD" --add-to-archive "$PWD/usr/lib/locale/C.utf8" >/dev/null
rm -rf usr/lib/locale/C.utf8
# libc-bin: keep what shell users call, drop the admin tools (no maintainer scripts run).
rm -f usr/sbin/ldconfig* usr/sbin/zic usr/sbin/iconvconfig usr/bin/iconv usr/bin/localedef \
      usr/bin/tzselect usr/bin/zdump usr/bin/sotruss usr/bin/sprof usr/bin/pldd usr/bin/gencat \
      usr/bin/catchsegv usr/bin/mtrace usr/bin/xtrace usr/bin/memusage*
rm -f usr/lib/i386-linux-gnu/libmemusage.so usr/lib/i386-linux-gnu/libpcprofile.so \
      usr/lib/i386-linux-gnu/libc_malloc_debug.so*
# util-linux: PAM-based tools (no PAM here) and tools for real disks and logins.
rm -f usr/bin/su usr/sbin/runuser usr/sbin/sulogin usr/bin/lslogins usr/sbin/agetty \
      usr/sbin/mkfs* usr/sbin/fsck* usr/sbin/mkswap usr/sbin/swap* usr/sbin/blk* \
      usr/sbin/wipefs usr/sbin/zramctl usr/sbin/chcpu usr/sbin/ctrlaltdel usr/sbin/isosize \
      usr/sbin/ldattach usr/sbin/rtcwake usr/sbin/readprofile usr/sbin/chmem usr/sbin/fstrim \
      usr/sbin/losetup usr/sbin/findfs usr/sbin/swaplabel usr/bin/addpart usr/bin/delpart \
      usr/bin/resizepart usr/bin/partx usr/bin/last usr/bin/lastb usr/bin/utmpdump usr/bin/mesg \
      usr/bin/write usr/sbin/installkernel usr/sbin/add-shell usr/sbin/remove-shell \
      usr/sbin/update-shells usr/bin/setterm
find . -xtype l -print0 | xargs -0r rm -f     # links left dangling by the above
# Terminal descriptions: TERM=dumb by default, plus the common ones for tools that ask.
keep_ti="a/ansi d/dumb l/linux v/vt100 v/vt102 v/vt220 x/xterm x/xterm-256color s/screen s/screen-256color t/tmux t/tmux-256color"
for tdir in usr/lib/terminfo usr/share/terminfo; do
  [ -d "$tdir" ] || continue
  find "$tdir" -mindepth 2 \( -type f -o -type l \) | while read -r f; do
    case " $keep_ti " in *" ${f#"$tdir/"} "*) ;; *) rm -f "$f" ;; esac
  done
  find "$tdir" -mindepth 1 -type d -empty -delete
done

# --- bash, statically linked, with the fork server ----------------------------------
# Debian's bash 5.2.15 built static by build.sh (build_bash) with image/bash's patch:
# the agent forks commands from one bash started at boot (image/bash/README.md).
# Static: a bash that does start (a script's `bash`, the exec path) skips the dynamic
# loader (libc, libtinfo); measured back-to-back exec("true") p50 55 -> 46 ms.
install -m 0755 "$BASH_BIN" usr/bin/bash

# --- jq 1.7, built from trixie's source by build.sh (build_jq): bookworm's 1.6 spends
# ~0.65 s of emulated CPU linking its built-ins at each start; 1.7 binds only those used.
install -m 0755 "$JQ_BIN" usr/bin/jq

# --- links the packages' maintainer scripts (not run by dpkg -x) would make -----------
ln -sfn bash usr/bin/sh
ln -sfn gawk usr/bin/awk
ln -sfn xz usr/bin/lzma; ln -sfn xz usr/bin/unlzma; ln -sfn xz usr/bin/lzcat
ln -sfn less usr/bin/pager
# busybox only for what the GNU packages lack: power control.
for a in poweroff reboot halt; do ln -sfn ../bin/busybox "usr/sbin/$a"; done

# --- skeleton --------------------------------------------------------------------------
mkdir -p dev proc sys run tmp var/tmp var/log var/cache var/lib mnt opt srv \
         root home/user usr/local/bin usr/local/sbin usr/local/lib etc
chmod 1777 tmp var/tmp
chmod 0700 root
cp -a "$HERE/skel/." .
ln -sfn ../proc/self/mounts etc/mtab
ln -sfn ../run var/run
# The kernel opens /dev/console for /init's stdio before devtmpfs is mounted.
mknod -m 600 dev/console c 5 1
mknod -m 666 dev/null c 1 3
mknod -m 644 dev/kmsg c 1 11
install -m 0755 "$INIT_BIN" init
