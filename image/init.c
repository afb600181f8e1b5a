/*
 * v86box /init: PID 1 until the agent takes over.
 *
 * Freestanding C (no libc, raw i386 system calls) on purpose. On the emulated CPU every
 * page an exec touches is first read from the squashfs root and decompressed, and the
 * kernel reads ahead in whole squashfs blocks: the first exec of busybox's ash cost
 * ~95 M guest instructions (~40% of the boot's CPU work), a static glibc build of this
 * program ~30 M (its 680 KB were decompressed almost entirely), this ~6 KB binary
 * almost nothing. No fork, no exec until the agent.
 *
 * Steps (failures are logged to the kernel log; none is fatal):
 *   1. If the root is the read-only squashfs on /dev/sda (no initramfs): a tmpfs on
 *      /mnt, an overlay (lower = /, upper = that tmpfs) on /mnt/root, pivot into it so
 *      the whole tree is writable (in RAM), and detach the old root from view.
 *   2. proc, sys, devtmpfs /dev, devpts, /dev/shm, /tmp, /run; /dev/fd and std links.
 *   3. Hostname from /etc/hostname; the RNG gets what differs between boots mixed in
 *      (the agent credits real entropy from the host's INIT frame).
 *   4. Console log level 4: warnings and worse stay on ttyS0.
 *   5. "v86box: init ready" on /dev/ttyS0, then exec /sbin/v86box-agent, which becomes
 *      PID 1 and reaps orphans. Without an agent, stay PID 1 and reap them here.
 *
 * Build (image/build.sh): gcc -m32 -static -nostdlib -ffreestanding -Os -s
 */
#include <asm/unistd.h>
#include <linux/fcntl.h>
#include <linux/magic.h>
#include <linux/mount.h>
#include <linux/time.h>

#define AGENT "/sbin/v86box-agent"
#define READY "v86box: init ready\n"
#define ECHILD 10
#define EBUSY 16
#define X_OK 1
#define MNT_DETACH 2
#ifndef SQUASHFS_MAGIC
#define SQUASHFS_MAGIC 0x73717368
#endif

typedef unsigned long size_t;
typedef long ssize_t;

/* --- system calls: i386 `int $0x80`, arguments in ebx ecx edx esi edi ------------ */
static long sys(long n, long a, long b, long c, long d, long e) {
	long ret;
	__asm__ volatile("int $0x80"
	                 : "=a"(ret)
	                 : "a"(n), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
	                 : "memory");
	return ret; /* -errno on failure */
}
#define SYS1(n, a) sys(n, (long)(a), 0, 0, 0, 0)
#define SYS2(n, a, b) sys(n, (long)(a), (long)(b), 0, 0, 0)
#define SYS3(n, a, b, c) sys(n, (long)(a), (long)(b), (long)(c), 0, 0)
#define SYS4(n, a, b, c, d) sys(n, (long)(a), (long)(b), (long)(c), (long)(d), 0)
#define SYS5(n, a, b, c, d, e) sys(n, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e))

static size_t len(const char *s) {
	size_t n = 0;
	while (s[n]) n++;
	return n;
}

/* Appends s to buf (size cap) at *at. */
static void put(char *buf, size_t cap, size_t *at, const char *s) {
	while (*s && *at + 1 < cap) buf[(*at)++] = *s++;
	buf[*at] = 0;
}

static void put_num(char *buf, size_t cap, size_t *at, long v) {
	char tmp[12];
	int i = 0;
	if (v < 0) {
		put(buf, cap, at, "-");
		v = -v;
	}
	do tmp[i++] = (char)('0' + v % 10); while ((v /= 10) && i < 11);
	while (i > 0 && *at + 1 < cap) buf[(*at)++] = tmp[--i];
	buf[*at] = 0;
}

/* A line in the kernel log (with a timestamp: bench/boot.ts reads them). level "<6>" =
 * info, only on the console with loglevel >= 7; "<3>" = error, always on ttyS0. */
static void klog(const char *level, const char *msg, long err) {
	char buf[200];
	size_t at = 0;
	put(buf, sizeof buf, &at, level);
	put(buf, sizeof buf, &at, "v86box-init: ");
	put(buf, sizeof buf, &at, msg);
	if (err < 0) {
		put(buf, sizeof buf, &at, ": error ");
		put_num(buf, sizeof buf, &at, -err);
	}
	put(buf, sizeof buf, &at, "\n");
	long fd = SYS3(__NR_open, "/dev/kmsg", O_WRONLY | O_CLOEXEC, 0);
	if (fd < 0) fd = SYS3(__NR_open, "/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC, 0);
	if (fd < 0) return;
	SYS3(__NR_write, fd, buf, at);
	SYS1(__NR_close, fd);
}
static void mark(const char *msg) { klog("<6>", msg, 0); }

static void mnt(const char *src, const char *dst, const char *type, unsigned long flags, const char *data) {
	long r = SYS5(__NR_mount, src, dst, type, flags, data);
	if (r < 0 && r != -EBUSY) {
		char msg[96];
		size_t at = 0;
		put(msg, sizeof msg, &at, "mount ");
		put(msg, sizeof msg, &at, type);
		put(msg, sizeof msg, &at, " on ");
		put(msg, sizeof msg, &at, dst);
		klog("<3>", msg, r);
	}
}

/* st_dev is the first field of i386's struct stat64. */
static unsigned long long dev_of(const char *path) {
	unsigned long long st[16];
	return SYS2(__NR_stat64, path, st) == 0 ? st[0] : ~0ULL;
}

static void write_file(const char *path, const void *data, size_t n) {
	long fd = SYS3(__NR_open, path, O_WRONLY | O_CLOEXEC, 0);
	if (fd < 0) return;
	SYS3(__NR_write, fd, data, n);
	SYS1(__NR_close, fd);
}

/* Step 1: the squashfs root becomes the lower layer of a tmpfs-backed overlay. */
static void overlay_root(void) {
	long fs[32]; /* struct statfs: f_type first */
	if (SYS2(__NR_statfs, "/", fs) != 0 || (unsigned long)fs[0] != SQUASHFS_MAGIC) return;
	mnt("tmpfs", "/mnt", "tmpfs", 0, "mode=0755");
	SYS2(__NR_mkdir, "/mnt/upper", 0755);
	SYS2(__NR_mkdir, "/mnt/work", 0755);
	SYS2(__NR_mkdir, "/mnt/root", 0755);
	mnt("overlay", "/mnt/root", "overlay", 0, "lowerdir=/,upperdir=/mnt/upper,workdir=/mnt/work");
	long r = SYS1(__NR_chdir, "/mnt/root");
	if (r == 0) r = SYS2(__NR_pivot_root, ".", "mnt");
	if (r == 0) r = SYS1(__NR_chroot, ".");
	if (r == 0) r = SYS1(__NR_chdir, "/");
	if (r != 0) {
		klog("<3>", "pivot into the overlay root failed; the root stays read-only", r);
		return;
	}
	/* The old root (and the tmpfs under the upper layer) live on inside the overlay. */
	SYS2(__NR_umount2, "/mnt", MNT_DETACH);
	mark("overlay root ready");
}

static void set_hostname(void) {
	char name[65];
	long n = -1, fd = SYS3(__NR_open, "/etc/hostname", O_RDONLY | O_CLOEXEC, 0);
	if (fd >= 0) {
		n = SYS3(__NR_read, fd, name, sizeof name - 1);
		SYS1(__NR_close, fd);
	}
	if (n < 0) n = 0;
	name[n] = 0;
	for (long i = 0; i < n; i++)
		if (name[i] == '\n') name[n = i] = 0;
	if (n == 0) {
		const char *d = "v86box";
		for (n = 0; d[n]; n++) name[n] = d[n];
	}
	long r = SYS2(__NR_sethostname, name, n);
	if (r < 0) klog("<3>", "sethostname", r);
}

/* Mixes in, credits nothing: clocks, and interrupt counts that vary with the host. */
static void seed_rng(void) {
	struct {
		long ts[8];
		char interrupts[512];
	} seed;
	for (size_t i = 0; i < sizeof seed; i++) ((char *)&seed)[i] = 0;
	SYS2(__NR_clock_gettime, CLOCK_REALTIME, &seed.ts[0]);
	SYS2(__NR_clock_gettime, CLOCK_MONOTONIC, &seed.ts[2]);
	SYS2(__NR_clock_gettime, CLOCK_BOOTTIME, &seed.ts[4]);
	long fd = SYS3(__NR_open, "/proc/interrupts", O_RDONLY | O_CLOEXEC, 0);
	if (fd >= 0) {
		SYS3(__NR_read, fd, seed.interrupts, sizeof seed.interrupts);
		SYS1(__NR_close, fd);
	}
	write_file("/dev/urandom", &seed, sizeof seed);
}

static void init_main(void) {
	mark("start");
	overlay_root();

	mnt("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
	mnt("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
	if (dev_of("/dev") == dev_of("/")) mnt("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	SYS2(__NR_mkdir, "/dev/pts", 0755);
	SYS2(__NR_mkdir, "/dev/shm", 01777);
	mnt("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666");
	mnt("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	mnt("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	mnt("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
	/* devtmpfs has no fd links; bash process substitution and many scripts use them. */
	SYS2(__NR_symlink, "/proc/self/fd", "/dev/fd");
	SYS2(__NR_symlink, "/proc/self/fd/0", "/dev/stdin");
	SYS2(__NR_symlink, "/proc/self/fd/1", "/dev/stdout");
	SYS2(__NR_symlink, "/proc/self/fd/2", "/dev/stderr");

	set_hostname();
	seed_rng();
	write_file("/proc/sys/kernel/printk", "4 4 1 7", 7);
	mark("system mounted");

	write_file("/dev/ttyS0", READY, len(READY));

	if (SYS2(__NR_access, AGENT, X_OK) == 0) {
		const char *argv[] = {AGENT, 0};
		const char *envp[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		                      "HOME=/root", "LANG=C.UTF-8", "TERM=dumb", 0};
		long r = SYS3(__NR_execve, AGENT, argv, envp);
		klog("<3>", "exec " AGENT " failed; staying as a plain init", r);
	}

	/* No agent: stay PID 1 and reap whatever is reparented to us. Signals that would
	 * kill another process do nothing to PID 1 without a handler. With no child left,
	 * look again every second (orphans appear only while something runs). */
	for (;;) {
		if (SYS4(__NR_wait4, -1, 0, 0, 0) == -ECHILD) {
			struct timespec second = {1, 0};
			SYS2(__NR_nanosleep, &second, 0);
		}
	}
}

/* The entry point: no libc, so no crt; the stack holds argc/argv, which we don't need. */
__attribute__((noreturn, used)) void _start(void) {
	init_main();
	for (;;) SYS1(__NR_exit, 1);
}
