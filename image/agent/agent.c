/*
 * v86box-agent: the guest side of v86box.
 *
 * It runs `bash -c` commands for the host and speaks the framed protocol of
 * docs/protocol.md (version 1) on the virtio console. Keep the two in step.
 *
 * As PID 1 it forks: the parent reaps orphans and powers the machine off if the
 * agent dies; the child is the agent. Everything the agent does happens in one
 * poll() loop over the console, the commands' pipes and a signalfd for SIGCHLD.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/random.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define AGENT_VERSION "0.2.0"
/* A native build can run another bash (make agent-native FORK_SERVER_BASH=path), to try the fork server. */
#ifndef BASH_PATH
#define BASH_PATH "/bin/bash"
#endif
#define PROTOCOL_VERSION "1"

#define MAGIC_0 0x56
#define MAGIC_1 0xBB
#define HEADER_SIZE 12
#define MAX_PAYLOAD 65536
#define MAX_PING_PAYLOAD 64
#define INITIAL_CREDIT 262144
#define STDIN_WINDOW 65536
#define DRAIN_TIMEOUT_MS 200
#define START_ERROR_MAX 1024
/* Processes one command may have at once (a cgroup's pids.max): a fork bomb stops here.
 * 256 bash processes did not fit in the default 64 MiB guest (global OOM, guest frozen
 * for tens of seconds); 128 use ~20 MiB. */
#define COMMAND_PIDS_MAX 128
#define CGROUP_ROOT "/sys/fs/cgroup"
#define COMMANDS_CGROUP CGROUP_ROOT "/commands"

enum frame_type {
	FRAME_PING = 0x02,
	FRAME_INIT = 0x04,
	FRAME_EXEC = 0x10,
	FRAME_STDIN = 0x11,
	FRAME_SIGNAL = 0x12,
	FRAME_CREDIT = 0x13,
	FRAME_READY = 0x80,
	FRAME_PONG = 0x82,
	FRAME_INIT_OK = 0x84,
	FRAME_STARTED = 0x90,
	FRAME_STDOUT = 0x91,
	FRAME_STDERR = 0x92,
	FRAME_EXIT = 0x93,
	FRAME_STDIN_ACK = 0x94,
	FRAME_ERROR = 0x95,
};

/* A command's stdout or stderr pipe, as the agent reads it. */
struct output {
	int fd; /* read end, -1 once done */
	uint8_t frame_type; /* FRAME_STDOUT or FRAME_STDERR */
	int64_t left; /* past the drain deadline: bytes still to send before closing; else -1 */
};

/*
 * A command cgroup, with the two of its files the agent uses for every command kept
 * open while the group is reused: opening a cgroup file walks its path and sets up
 * kernfs's state for the open file, and this saves two of those (and their closes)
 * per command. An fd is -1 where its open failed; the group then works as before.
 */
struct command_cgroup {
	uint32_t id;
	int procs_fd; /* cgroup.procs, write-only: handed to the fork server's child */
	int events_fd; /* cgroup.events, read-only: read at 0 to see whether it emptied */
};

/* One running command. Channels live from EXEC until EXIT has been sent. */
struct channel {
	struct channel *next;
	uint32_t id;
	pid_t pid;
	struct output outputs[2]; /* stdout, stderr */
	int stdin_fd; /* write end, -1 if stdin is /dev/null or closed */
	unsigned char *stdin_buf; /* STDIN payload not yet written, at most STDIN_WINDOW bytes */
	size_t stdin_start;
	size_t stdin_len;
	bool stdin_eof; /* the host closed stdin: close the pipe once the buffer is written */
	uint64_t credit;
	bool exited;
	int32_t exit_code;
	uint32_t exit_signal;
	int64_t drain_deadline; /* monotonic ms: stop waiting for EOF on the pipes after this */
	bool past_deadline;
	/*
	 * Sent to the fork server, which has not named the process yet (pid 0): its output
	 * is not read, and a signal for it waits in pending_signal.
	 */
	bool starting;
	uint32_t pending_signal;
	bool discard; /* the start failed and ERROR was sent: free without EXIT */
	struct command_cgroup cgroup; /* its cgroup (id 0: none), released with the channel */
};

struct exec_request {
	uint32_t cgroup_id; /* 0: none */
	const char *cmd;
	const char *cwd;
	bool set_ids;
	uid_t uid;
	gid_t gid;
	bool stdin_pipe;
	const char **env; /* NAME=value strings, in the order given */
	size_t env_count;
	const char *server_padding; /* the fork server's: room for its children's command lines */
};

/* What a pollfd after the first two is for: a channel's output, or its stdin if output is NULL. */
struct poll_slot {
	struct channel *channel;
	struct output *output;
};

static int console_in = -1;
static int console_out = -1;
static int sigchld_fd = -1;
static struct channel *channels;
static struct rlimit original_nofile;
static bool use_cgroups; /* in the guest: each command in its own pids-limited cgroup */

static unsigned char frame_in[HEADER_SIZE + MAX_PAYLOAD];
static size_t frame_in_len;
static bool resyncing; /* after a malformed frame: skipping to the next magic */
static unsigned char frame_out[HEADER_SIZE + MAX_PAYLOAD];
static char problem_text[160]; /* for messages built on the fly, used at once */

static void warn(const char *format, ...)
{
	va_list args;
	va_start(args, format);
	fputs("v86box-agent: ", stderr);
	vfprintf(stderr, format, args);
	fputc('\n', stderr);
	va_end(args);
}

static void die(const char *what)
{
	warn("%s: %s", what, strerror(errno));
	exit(1);
}

static const char *failed(const char *what)
{
	snprintf(problem_text, sizeof problem_text, "%s: %s", what, strerror(errno));
	return problem_text;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		die("clock_gettime");
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void close_pipe(int ends[2])
{
	close_fd(&ends[0]);
	close_fd(&ends[1]);
}

static bool set_nonblocking(int fd)
{
	int flags = fcntl(fd, F_GETFL);
	return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

static int write_text(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int result = write(fd, text, strlen(text)) < 0 ? -1 : 0;
	close(fd);
	return result;
}

/* RAM the kernel can give out, in KiB (0 if unknown): MemTotal less the huge page pool,
 * which holds the fork server's code. */
static unsigned long mem_total_kb(void)
{
	unsigned long kb = 0, value;
	char line[128];
	FILE *file = fopen("/proc/meminfo", "re");
	if (!file)
		return 0;
	while (fgets(line, sizeof line, file)) {
		if (sscanf(line, "MemTotal: %lu kB", &value) == 1)
			kb += value;
		else if (sscanf(line, "Hugetlb: %lu kB", &value) == 1)
			kb -= value;
	}
	fclose(file);
	return kb;
}

/*
 * Guest only: cgroup v2. Each command gets a group of its own under "commands", with
 * pids.max (root ignores RLIMIT_NPROC, so this is what stops a fork bomb). The
 * commands group has memory.max below guest RAM: there is no swap, so without it a
 * command that allocates without end makes the kernel evict every program page it
 * can, and the whole guest crawls re-reading them for minutes before the OOM killer
 * acts; with it the OOM killer picks the biggest command process at once, while the
 * agent, the fork server and their page cache still have room. Memory accounting costs
 * ~10 % more emulated instructions per back-to-back command (measured); the controller
 * stops at that one group, as a memory group per command also cost ~7 % more on the
 * forked path (measured with the fork server's predecessor), for a cap nobody asked
 * for. Without cgroups commands just run uncapped.
 */
static void setup_cgroups(void)
{
	if (mount("cgroup2", CGROUP_ROOT, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 && errno != EBUSY) {
		warn("mount cgroup2: %s", strerror(errno));
		return;
	}
	/* cpu: a command's processes share one command's CPU time, so a fork bomb
	 * slows itself, not the other commands. */
	if (write_text(CGROUP_ROOT "/cgroup.subtree_control", "+pids +cpu +memory") < 0 &&
	    write_text(CGROUP_ROOT "/cgroup.subtree_control", "+pids +cpu") < 0 &&
	    write_text(CGROUP_ROOT "/cgroup.subtree_control", "+pids") < 0) {
		warn("cgroup pids controller: %s", strerror(errno));
		return;
	}
	if (mkdir(COMMANDS_CGROUP, 0755) < 0 && errno != EEXIST) {
		warn("mkdir " COMMANDS_CGROUP ": %s", strerror(errno));
		return;
	}
	/* Room left for the kernel, the agent, the fork server and the page cache of the
	 * programs they run: 12 MiB plus an eighth of RAM. */
	unsigned long total = mem_total_kb(), reserve = 12 * 1024 + total / 8;
	char limit[24];
	snprintf(limit, sizeof limit, "%lu", total > 2 * reserve ? (total - reserve) * 1024 : total * 1024 / 2);
	if (total && write_text(COMMANDS_CGROUP "/memory.max", limit) < 0 && errno != ENOENT)
		warn("commands memory.max: %s", strerror(errno));
	if (write_text(COMMANDS_CGROUP "/cgroup.subtree_control", "+pids +cpu") < 0 &&
	    write_text(COMMANDS_CGROUP "/cgroup.subtree_control", "+pids") < 0) {
		warn("commands pids controller: %s", strerror(errno));
		return;
	}
	use_cgroups = true;
}

static void command_cgroup_path(uint32_t id, char *path, size_t size, const char *file)
{
	snprintf(path, size, COMMANDS_CGROUP "/command-%u%s%s", id, file ? "/" : "", file ? file : "");
}

/*
 * Command cgroups are reused. Making one (a directory of ~25 kernfs files, the cpu
 * controller's scheduler entities) and removing it cost ~0.4 M emulated instructions, 40 %
 * of a whole forked `true` (measured: 1.01 M instructions, 0.59 M without cgroups, 0.73 M
 * reusing them). A
 * group left empty goes back to a short free list; one an escaped process still holds
 * is removed instead (rmdir fails while it lives, and it keeps its cap, as before).
 */
#define FREE_CGROUPS_MAX 8
static struct command_cgroup free_cgroups[FREE_CGROUPS_MAX];
static size_t free_cgroup_count;
static uint32_t cgroups_made;

/* A cgroup for a command (numbered from 1), or id 0 and it runs uncapped. */
static struct command_cgroup take_command_cgroup(void)
{
	struct command_cgroup none = { 0, -1, -1 };
	char path[96], limit[16];
	if (!use_cgroups)
		return none;
	if (free_cgroup_count > 0)
		return free_cgroups[--free_cgroup_count];
	uint32_t id = ++cgroups_made;
	command_cgroup_path(id, path, sizeof path, NULL);
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return none;
	command_cgroup_path(id, path, sizeof path, "pids.max");
	snprintf(limit, sizeof limit, "%d", COMMAND_PIDS_MAX);
	if (write_text(path, limit) < 0) {
		command_cgroup_path(id, path, sizeof path, NULL);
		rmdir(path);
		return none;
	}
	struct command_cgroup group = { id, -1, -1 };
	command_cgroup_path(id, path, sizeof path, "cgroup.procs");
	group.procs_fd = open(path, O_WRONLY | O_CLOEXEC);
	command_cgroup_path(id, path, sizeof path, "cgroup.events");
	group.events_fd = open(path, O_RDONLY | O_CLOEXEC);
	return group;
}

/* True when no process is left in the group (or it cannot be told). */
static bool command_cgroup_empty(const struct command_cgroup *group)
{
	char events[128];
	/* Read from offset 0, a cgroup file is generated afresh. */
	ssize_t n = group->events_fd < 0 ? -1 : pread(group->events_fd, events, sizeof events - 1, 0);
	if (n <= 0)
		return false;
	events[n] = '\0';
	return strstr(events, "populated 0") != NULL;
}

/* Moves pid (0: the caller) into the command's cgroup. */
static void enter_command_cgroup(uint32_t id, pid_t pid)
{
	char path[96], text[16];
	command_cgroup_path(id, path, sizeof path, "cgroup.procs");
	snprintf(text, sizeof text, "%d", (int)pid);
	if (write_text(path, text) < 0) {
		/* The command then runs without its cap; nothing else depends on it. */
	}
}

/* Gives an empty group back for the next command; removes one that is not (see above). */
static void release_command_cgroup(struct command_cgroup *group)
{
	char path[96];
	if (free_cgroup_count < FREE_CGROUPS_MAX && command_cgroup_empty(group)) {
		free_cgroups[free_cgroup_count++] = *group;
		group->id = 0;
		return;
	}
	close_fd(&group->procs_fd);
	close_fd(&group->events_fd);
	command_cgroup_path(group->id, path, sizeof path, NULL);
	rmdir(path);
	group->id = 0;
}

static void put_u32(unsigned char *p, uint32_t n)
{
	p[0] = n & 0xff;
	p[1] = (n >> 8) & 0xff;
	p[2] = (n >> 16) & 0xff;
	p[3] = (n >> 24) & 0xff;
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Writes everything, also to a non-blocking fd (then it waits for POLLOUT). */
static int write_all(int fd, const unsigned char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n > 0) {
			data += n;
			len -= (size_t)n;
		} else if (n < 0 && errno == EAGAIN) {
			struct pollfd writable = { .fd = fd, .events = POLLOUT };
			if (poll(&writable, 1, -1) < 0 && errno != EINTR)
				return -1;
		} else if (n < 0 && errno != EINTR) {
			return -1;
		}
	}
	return 0;
}

/* The payload may already sit in frame_out after the header (output is read there). */
static void send_frame(uint8_t type, uint32_t channel, const void *payload, size_t len)
{
	unsigned char *header = frame_out;
	header[0] = MAGIC_0;
	header[1] = MAGIC_1;
	header[2] = type;
	header[3] = 0;
	put_u32(header + 4, channel);
	put_u32(header + 8, (uint32_t)len);
	if (payload != frame_out + HEADER_SIZE && len > 0)
		memmove(frame_out + HEADER_SIZE, payload, len);
	/* Without the console the agent is useless: as PID 1's child, dying powers off. */
	if (write_all(console_out, frame_out, HEADER_SIZE + len) < 0)
		die("console write");
}

static void send_u32(uint8_t type, uint32_t channel, uint32_t n)
{
	unsigned char payload[4];
	put_u32(payload, n);
	send_frame(type, channel, payload, sizeof payload);
}

static void send_error(uint32_t channel, const char *format, ...)
{
	char *message = (char *)frame_out + HEADER_SIZE;
	va_list args;
	va_start(args, format);
	int len = vsnprintf(message, MAX_PAYLOAD, format, args);
	va_end(args);
	if (len < 0)
		len = 0;
	if (len >= MAX_PAYLOAD)
		len = MAX_PAYLOAD - 1;
	send_frame(FRAME_ERROR, channel, message, (size_t)len);
}

static void send_ready(void)
{
	static const char pairs[] = "protocol\0" PROTOCOL_VERSION "\0agent\0" AGENT_VERSION;
	send_frame(FRAME_READY, 0, pairs, sizeof pairs);
}

/* Pairs are NUL-terminated strings, alternately key and value. */
static bool pairs_valid(const unsigned char *payload, size_t len)
{
	size_t strings = 0;
	if (len > 0 && payload[len - 1] != 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (payload[i] == 0)
			strings++;
	return strings % 2 == 0;
}

/* Steps through valid pairs; returns false at the end. */
static bool next_pair(const char **position, const char *end, const char **key, const char **value)
{
	if (*position >= end)
		return false;
	*key = *position;
	*value = *key + strlen(*key) + 1;
	*position = *value + strlen(*value) + 1;
	return true;
}

static bool parse_u64(const char *text, uint64_t max, uint64_t *out)
{
	uint64_t n = 0;
	if (*text == 0)
		return false;
	for (; *text; text++) {
		if (*text < '0' || *text > '9')
			return false;
		unsigned digit = (unsigned)(*text - '0');
		if (n > (max - digit) / 10)
			return false;
		n = n * 10 + digit;
	}
	*out = n;
	return true;
}

static struct channel *find_channel(uint32_t id)
{
	for (struct channel *channel = channels; channel; channel = channel->next)
		if (channel->id == id)
			return channel;
	return NULL;
}

static void free_channel(struct channel *channel)
{
	close_fd(&channel->outputs[0].fd);
	close_fd(&channel->outputs[1].fd);
	close_fd(&channel->stdin_fd);
	if (channel->cgroup.id)
		release_command_cgroup(&channel->cgroup);
	free(channel->stdin_buf);
	free(channel);
}

static const char *home_for(uid_t uid)
{
	if (uid == 0)
		return "/root";
	if (uid == 1000)
		return "/home/user";
	return "/";
}

/* Returns an error message, or NULL with *request filled (request->env is malloc'd). */
static const char *parse_exec(const unsigned char *payload, size_t len, struct exec_request *request)
{
	const char *end = (const char *)payload + len;
	const char *position, *key, *value;
	bool uid_given = false, gid_given = false;
	uint64_t number;

	memset(request, 0, sizeof *request);
	if (!pairs_valid(payload, len))
		return "malformed EXEC pairs";
	request->env = malloc((len / 2 + 1) * sizeof *request->env);
	if (!request->env)
		return "out of memory";
	position = (const char *)payload;
	while (next_pair(&position, end, &key, &value)) {
		if (strcmp(key, "cmd") == 0) {
			request->cmd = value;
		} else if (strcmp(key, "cwd") == 0) {
			request->cwd = value;
		} else if (strcmp(key, "uid") == 0) {
			if (!parse_u64(value, UINT32_MAX - 1, &number))
				return "bad uid";
			request->uid = (uid_t)number;
			uid_given = true;
		} else if (strcmp(key, "gid") == 0) {
			if (!parse_u64(value, UINT32_MAX - 1, &number))
				return "bad gid";
			request->gid = (gid_t)number;
			gid_given = true;
		} else if (strcmp(key, "env") == 0) {
			if (value[0] == '=' || !strchr(value, '='))
				return "bad env entry (want NAME=value)";
			request->env[request->env_count++] = value;
		} else if (strcmp(key, "stdin") == 0) {
			if (strcmp(value, "pipe") == 0)
				request->stdin_pipe = true;
			else if (strcmp(value, "null") == 0)
				request->stdin_pipe = false;
			else
				return "bad stdin (want pipe or null)";
		}
		/* Other keys are ignored, so a newer host can add optional ones. */
	}
	if (!request->cmd)
		return "EXEC without cmd";
	if (uid_given && !gid_given)
		request->gid = request->uid;
	request->set_ids = uid_given || gid_given;
	return NULL;
}

/* Sets NAME=value in env (count entries, room for more), replacing an entry of the same NAME. */
static void set_env(const char **env, size_t *count, const char *entry)
{
	size_t name_len = (size_t)(strchr(entry, '=') - entry) + 1;
	for (size_t i = 0; i < *count; i++) {
		if (strncmp(env[i], entry, name_len) == 0) {
			env[i] = entry;
			return;
		}
	}
	env[(*count)++] = entry;
}

/* In the command child: report why it could not start, through the error pipe. */
static _Noreturn void fail_start(int error_fd, const char *what, const char *argument)
{
	char message[START_ERROR_MAX];
	int len = snprintf(message, sizeof message, "%s%s%s: %s", what, *argument ? " " : "", argument,
			   strerror(errno));
	if (len > (int)sizeof message - 1)
		len = sizeof message - 1;
	if (len > 0 && write(error_fd, message, (size_t)len) < 0) {
		/* Nothing else can carry the message; the parent reports an unknown failure. */
	}
	_exit(127);
}

static void reset_signals(void)
{
	sigset_t none;
	/* SIG_IGN survives execve: the command must not inherit the agent's ignored SIGPIPE. */
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

static int write_oom_score_adj(const char *value)
{
	return write_text("/proc/self/oom_score_adj", value);
}

/* In the command child, after fork: never returns. */
static _Noreturn void run_command(const struct exec_request *request, int stdin_fd, int stdout_fd,
				  int stderr_fd, int error_fd)
{
	uid_t uid = request->set_ids ? request->uid : 0;
	char uid_text[16], gid_text[16], user[32], home[64];
	const char *default_env[8];
	size_t env_count = 0;

	if (setsid() < 0)
		fail_start(error_fd, "setsid", "");
	if (request->cgroup_id)
		enter_command_cgroup(request->cgroup_id, 0);
	/* The agent runs at the highest priority so a busy guest still hears the host. */
	setpriority(PRIO_PROCESS, 0, 0);
	reset_signals();
	/* Raising the score back from -1000 needs no privilege. A failure means the agent
	 * could not lower its own either (no /proc), so there is nothing to undo. */
	write_oom_score_adj("0");
	if (setrlimit(RLIMIT_NOFILE, &original_nofile) < 0)
		fail_start(error_fd, "setrlimit", "RLIMIT_NOFILE");
	if (stdin_fd < 0 && (stdin_fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
		fail_start(error_fd, "open", "/dev/null");
	/* All three fds are >= 3 (main keeps 0-2 open), so dup2 clears their close-on-exec. */
	if (dup2(stdin_fd, 0) < 0 || dup2(stdout_fd, 1) < 0 || dup2(stderr_fd, 2) < 0)
		fail_start(error_fd, "dup2", "");
	snprintf(uid_text, sizeof uid_text, "%u", (unsigned)uid);
	snprintf(gid_text, sizeof gid_text, "%u", (unsigned)request->gid);
	if (request->set_ids) {
		if (setgroups(1, &request->gid) < 0)
			fail_start(error_fd, "setgroups", gid_text);
		if (setgid(request->gid) < 0)
			fail_start(error_fd, "setgid", gid_text);
		if (setuid(uid) < 0)
			fail_start(error_fd, "setuid", uid_text);
	}
	snprintf(home, sizeof home, "HOME=%s", home_for(uid));
	const char *cwd = request->cwd ? request->cwd : home + strlen("HOME=");
	if (chdir(cwd) < 0)
		fail_start(error_fd, "chdir", cwd);

	snprintf(user, sizeof user, "%s", uid == 0 ? "root" : uid == 1000 ? "user" : uid_text);
	char user_env[48], logname_env[48];
	snprintf(user_env, sizeof user_env, "USER=%s", user);
	snprintf(logname_env, sizeof logname_env, "LOGNAME=%s", user);
	default_env[env_count++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	default_env[env_count++] = home;
	default_env[env_count++] = user_env;
	default_env[env_count++] = logname_env;
	default_env[env_count++] = "SHELL=/bin/bash";
	default_env[env_count++] = "LANG=C.UTF-8";
	default_env[env_count++] = "TERM=dumb";
	const char **env = malloc((env_count + request->env_count + 1) * sizeof *env);
	if (!env)
		fail_start(error_fd, "malloc", "env");
	memcpy(env, default_env, env_count * sizeof *env);
	for (size_t i = 0; i < request->env_count; i++)
		set_env(env, &env_count, request->env[i]);
	env[env_count] = NULL;

	/* The fork server gets `bash -c "" bash PADDING`: $0 stays "bash". */
	char *argv[] = { "bash", "-c", (char *)request->cmd, request->server_padding ? "bash" : NULL,
			 (char *)request->server_padding, NULL };
	execve(BASH_PATH, argv, (char **)env);
	fail_start(error_fd, "exec", BASH_PATH);
}

/* Reads what the command child wrote to the error pipe before exec, up to EOF. */
static size_t read_start_error(int fd, char *message, size_t size)
{
	size_t len = 0;
	while (len < size) {
		ssize_t n = read(fd, message + len, size - len);
		if (n > 0)
			len += (size_t)n;
		else if (n == 0 || errno != EINTR)
			break;
	}
	return len;
}

static void wait_for(pid_t pid)
{
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
	}
}


static struct channel *new_channel(uint32_t id)
{
	struct channel *channel = calloc(1, sizeof *channel);
	if (!channel)
		return NULL;
	channel->id = id;
	channel->outputs[0] = (struct output){ .fd = -1, .frame_type = FRAME_STDOUT, .left = -1 };
	channel->outputs[1] = (struct output){ .fd = -1, .frame_type = FRAME_STDERR, .left = -1 };
	channel->stdin_fd = -1;
	channel->credit = INITIAL_CREDIT;
	return channel;
}

/*
 * A command's stdout and stderr pipes, and its stdin pipe if it has one, with the
 * agent's ends non-blocking: a blocking pipe would freeze the agent.
 */
static bool open_command_pipes(bool with_stdin, int stdout_pipe[2], int stderr_pipe[2], int stdin_pipe[2])
{
	return pipe2(stdout_pipe, O_CLOEXEC) == 0 && pipe2(stderr_pipe, O_CLOEXEC) == 0 &&
	       (!with_stdin || pipe2(stdin_pipe, O_CLOEXEC) == 0) && set_nonblocking(stdout_pipe[0]) &&
	       set_nonblocking(stderr_pipe[0]) && (stdin_pipe[1] < 0 || set_nonblocking(stdin_pipe[1]));
}

static void receive_signal(struct channel *channel, uint32_t sig);
static void command_exited(struct channel *channel, int status);
static void read_server_replies(void);

/*
 * The fork server.
 *
 * Under v86 a fresh `bash -c` per command costs ~2.8 million emulated instructions
 * (~50 ms): the execve and bash's start-up. So the agent starts one bash at boot, the
 * server: Debian's bash with the patch image/bash/fork-server.patch. It starts as
 * `bash -c ""` with V86BOX_FORK_SERVER naming its end of a socket pair, initializes as
 * any `bash -c` does, and then, per request, clones itself with CLONE_PARENT: the child
 * is the agent's own child, so the agent reaps it and gets its status as for an exec'd
 * bash. The child takes the fds, cgroup, cwd and environment the request carries, sets
 * what a bash starting at that moment would have ($$, the start time, the RANDOM seeds,
 * HOSTNAME, PWD, `bash -c CMD` as its command line for ps), and runs the command where
 * `bash -c CMD` would. The server shows as `v86box-fork-server` in ps.
 *
 * Once initialized, the server says so: u32 0, i32 its pid. Until then commands take
 * the exec path. A request is one SOCK_SEQPACKET message: u32 id, then NUL-terminated
 * cwd, command and NAME=value entries, with stdin, stdout, stderr and the command's
 * cgroup.procs as SCM_RIGHTS. The reply is u32 id, i32 pid or -errno. The agent closes
 * its copies of the command's pipes as soon as the request is sent (it keeps /dev/null
 * and the cgroup's file open for the next commands).
 *
 * What takes the exec path instead: a uid or gid other than root's; a cwd that is not a
 * directory (the exec path reports chdir's error); environment names a starting bash
 * treats specially; a request too big for one message; and any time no server is ready
 * (a bash without the patch runs `bash -c ""` and exits at once: after
 * SERVER_START_FAILURES such starts the agent stops trying). A server that dies with requests unanswered (killed by a
 * command) fails them with ERROR: whether it had started them cannot be known.
 */
#define SERVER_REQUEST_MAX (64 * 1024)
/* How much of a command `ps` shows (the exec path's kernel shows a page at most too). */
#define SERVER_CMDLINE_ROOM 4096
#define SERVER_START_FAILURES 3
/* How long READY waits for the server started at boot to say it is initialized. */
#define SERVER_BOOT_WAIT_MS 10000
#define EARLY_EXITS_MAX 32

static int server_socket = -1; /* the agent's end: requests out, replies in */
static pid_t server_pid = -1;
static bool server_ready; /* the running server said it is initialized */
static int server_start_failures;
static unsigned server_waiting; /* requests sent and not answered */

/* A child reaped before the server's reply named it: a command that exited at once. */
static struct {
	pid_t pid;
	int status;
} early_exits[EARLY_EXITS_MAX];
static size_t early_exit_count;

/* Starts the server; on failure commands take the exec path. */
static void start_fork_server(void)
{
	int pair[2] = { -1, -1 }, null_fd = -1;
	char variable[40];
	static char padding[SERVER_CMDLINE_ROOM];

	if (server_start_failures >= SERVER_START_FAILURES)
		return;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0 || !set_nonblocking(pair[0]) ||
	    (null_fd = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) {
		warn("fork server: %s", strerror(errno));
		goto out;
	}
	snprintf(variable, sizeof variable, "V86BOX_FORK_SERVER=%d", pair[1]);
	const char *env[] = { variable };
	memset(padding, ' ', sizeof padding - 1);
	struct exec_request request = { .cmd = "", .env = env, .env_count = 1, .set_ids = true, .server_padding = padding };
	pid_t pid = fork();
	if (pid < 0) {
		warn("fork server: fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		/* The server's end stays open across its execve. */
		fcntl(pair[1], F_SETFD, 0);
		run_command(&request, null_fd, null_fd, null_fd, -1);
	}
	server_pid = pid;
	server_socket = pair[0];
	pair[0] = -1;
	server_ready = false;
out:
	close_fd(&pair[0]);
	close_fd(&pair[1]);
	close_fd(&null_fd);
}

/*
 * At boot, READY waits for the server: a command that came before it would take the
 * exec path, a second bash starting while the server does (measured: the first command
 * after a cold boot ran 9.5 M emulated instructions, ~0.9 s, instead of ~1.0 M). A
 * server that exits (a bash without the patch) or stays silent does not hold READY up
 * for longer than SERVER_BOOT_WAIT_MS.
 */
static void wait_for_fork_server(void)
{
	int64_t deadline = now_ms() + SERVER_BOOT_WAIT_MS;
	while (server_socket >= 0 && !server_ready) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return;
		struct pollfd server = { .fd = server_socket, .events = POLLIN };
		int ready = poll(&server, 1, (int)left);
		if (ready < 0 && errno != EINTR)
			return;
		if (ready > 0) {
			read_server_replies();
			/* Its socket closed: the server exited; reaping it is the main loop's job. */
			if (server.revents & (POLLHUP | POLLERR))
				return;
		}
	}
}

static bool is_shell_name(const char *name, size_t len)
{
	if (len == 0 || (name[0] >= '0' && name[0] <= '9'))
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
			return false;
	}
	return true;
}

/* Names a starting bash reads, sets itself, or that `export` refuses: those need a real `bash -c`. */
static bool shell_reads_at_start(const char *name, size_t len)
{
	static const char *const names[] = { "SHELLOPTS", "ENV", "POSIXLY_CORRECT", "IFS", "PS4", "EUID", "UID",
					     "PPID", "HOSTNAME", "PWD", "OLDPWD", "SHLVL", "_" };
	if (len >= 4 && strncmp(name, "BASH", 4) == 0)
		return true;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strlen(names[i]) == len && strncmp(names[i], name, len) == 0)
			return true;
	return false;
}

/* The request message, or NULL (and the exec path) when the server cannot take it. */
static char *server_request(uint32_t id, const struct exec_request *request, const char *cwd, size_t *len)
{
	struct stat st;
	size_t size = 4 + strlen(cwd) + 1 + strlen(request->cmd) + 1;

	/* The server runs as root with groups [0], as a command asking for uid 0 does. */
	if (!server_ready || (request->set_ids && (request->uid != 0 || request->gid != 0)))
		return NULL;
	if (stat(cwd, &st) < 0 || !S_ISDIR(st.st_mode))
		return NULL;
	for (size_t i = 0; i < request->env_count; i++) {
		const char *entry = request->env[i];
		size_t name_len = (size_t)(strchr(entry, '=') - entry);
		if (!is_shell_name(entry, name_len) || shell_reads_at_start(entry, name_len))
			return NULL;
		size += strlen(entry) + 1;
	}
	if (size > SERVER_REQUEST_MAX)
		return NULL;
	char *message = malloc(size), *p = message + 4;
	if (!message)
		return NULL;
	memcpy(message, &id, 4);
	p = stpcpy(p, cwd) + 1;
	p = stpcpy(p, request->cmd) + 1;
	for (size_t i = 0; i < request->env_count; i++)
		p = stpcpy(p, request->env[i]) + 1;
	*len = size;
	return message;
}

static bool send_to_server(const char *message, size_t len, const int *fds, int fd_count)
{
	union {
		struct cmsghdr header;
		char space[CMSG_SPACE(4 * sizeof(int))];
	} control;
	struct iovec iov = { .iov_base = (void *)message, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
			      .msg_controllen = CMSG_SPACE((size_t)fd_count * sizeof(int)) };
	memset(&control, 0, sizeof control);
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN((size_t)fd_count * sizeof(int));
	memcpy(CMSG_DATA(cmsg), fds, (size_t)fd_count * sizeof(int));
	ssize_t sent;
	while ((sent = sendmsg(server_socket, &msg, MSG_DONTWAIT | MSG_NOSIGNAL)) < 0 && errno == EINTR) {
	}
	/* EAGAIN (a full socket) or a dead server: the exec path runs it. */
	return sent == (ssize_t)len;
}

/* /dev/null for commands without stdin, opened once: the server's child gets a copy. */
static int dev_null(void)
{
	static int fd = -1;
	if (fd < 0)
		fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return fd;
}

/*
 * Hands the command to the fork server. Returns false, having changed nothing, when
 * the exec path must run it instead.
 */
static bool start_in_server(uint32_t id, const struct exec_request *request)
{
	int stdout_pipe[2] = { -1, -1 }, stderr_pipe[2] = { -1, -1 }, stdin_pipe[2] = { -1, -1 };
	int null_fd = -1, cgroup_fd = -1;
	struct channel *channel = NULL;
	bool started = false;
	size_t len = 0;
	char *message = server_request(id, request, request->cwd ? request->cwd : home_for(0), &len);

	if (!message)
		return false;
	if (!open_command_pipes(request->stdin_pipe, stdout_pipe, stderr_pipe, stdin_pipe) ||
	    (!request->stdin_pipe && (null_fd = dev_null()) < 0) ||
	    !(channel = new_channel(id)))
		goto out;
	channel->cgroup = take_command_cgroup();
	cgroup_fd = channel->cgroup.id ? channel->cgroup.procs_fd : -1;
	int fds[4] = { request->stdin_pipe ? stdin_pipe[0] : null_fd, stdout_pipe[1], stderr_pipe[1], cgroup_fd };
	if (!send_to_server(message, len, fds, cgroup_fd >= 0 ? 4 : 3)) {
		if (channel->cgroup.id)
			release_command_cgroup(&channel->cgroup);
		goto out;
	}
	server_waiting++;
	channel->starting = true;
	channel->outputs[0].fd = stdout_pipe[0];
	channel->outputs[1].fd = stderr_pipe[0];
	channel->stdin_fd = stdin_pipe[1];
	stdout_pipe[0] = stderr_pipe[0] = stdin_pipe[1] = -1;
	channel->next = channels;
	channels = channel;
	channel = NULL;
	started = true;
out:
	close_pipe(stdout_pipe);
	close_pipe(stderr_pipe);
	close_pipe(stdin_pipe);
	free(channel);
	free(message);
	return started;
}

/* Ends a command that never started, with ERROR instead of EXIT. */
static void fail_start_in_server(struct channel *channel, const char *why)
{
	channel->starting = false;
	send_error(channel->id, "%s", why);
	channel->discard = true;
}

static struct channel *find_starting_channel(uint32_t id)
{
	for (struct channel *channel = channels; channel; channel = channel->next)
		if (channel->id == id && channel->starting)
			return channel;
	return NULL;
}

/* The server named the command's process: it runs (or already ran) from here on. */
static void server_started(struct channel *channel, pid_t pid)
{
	channel->starting = false;
	channel->pid = pid;
	send_u32(FRAME_STARTED, channel->id, (uint32_t)pid);
	if (channel->pending_signal)
		receive_signal(channel, channel->pending_signal);
	for (size_t i = 0; i < early_exit_count; i++) {
		if (early_exits[i].pid != pid)
			continue;
		int status = early_exits[i].status;
		early_exits[i] = early_exits[--early_exit_count];
		/* What it left behind in its group goes as for any command that exited. */
		kill(-pid, SIGKILL);
		command_exited(channel, status);
		return;
	}
}

static void read_server_replies(void)
{
	unsigned char reply[8];
	ssize_t n;
	while (server_socket >= 0 && (n = recv(server_socket, reply, sizeof reply, MSG_DONTWAIT)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		if (n != (ssize_t)sizeof reply)
			continue;
		uint32_t id;
		int32_t value;
		memcpy(&id, reply, 4);
		memcpy(&value, reply + 4, 4);
		if (id == 0) {
			server_ready = value == server_pid;
			continue;
		}
		struct channel *channel = find_starting_channel(id);
		if (!channel)
			continue;
		server_waiting--;
		if (value > 0) {
			server_started(channel, (pid_t)value);
		} else {
			char why[96];
			snprintf(why, sizeof why, "fork: %s", strerror(-value));
			fail_start_in_server(channel, why);
		}
	}
}

/*
 * A child of the agent that is not a known command exited: the server, a command the
 * server started whose reply is not read yet, or an orphan. True if it was the server.
 */
static bool fork_server_child_exited(pid_t pid, int status)
{
	if (pid != server_pid) {
		if (server_waiting > 0) {
			if (early_exit_count == EARLY_EXITS_MAX)
				early_exit_count--;
			early_exits[early_exit_count].pid = pid;
			early_exits[early_exit_count].status = status;
			early_exit_count++;
		}
		return false;
	}
	/* Its replies were read before this. */
	if (!server_ready)
		server_start_failures++;
	close_fd(&server_socket);
	server_pid = -1;
	server_ready = false;
	server_waiting = 0;
	early_exit_count = 0;
	for (struct channel *channel = channels; channel; channel = channel->next)
		if (channel->starting)
			fail_start_in_server(channel, "the fork server exited before it started the command");
	return true;
}

/*
 * Starts the command like posix_spawn does: errors before exec come back through a
 * close-on-exec pipe, so a bad cwd is an ERROR frame and not a bash exit status.
 */
static void start_command(uint32_t id, const unsigned char *payload, size_t len)
{
	struct exec_request request;
	int stdout_pipe[2] = { -1, -1 }, stderr_pipe[2] = { -1, -1 }, stdin_pipe[2] = { -1, -1 };
	int error_pipe[2] = { -1, -1 };
	struct channel *channel = NULL;
	char message[START_ERROR_MAX];
	size_t message_len;
	pid_t pid;

	const char *problem = parse_exec(payload, len, &request);
	if (problem) {
		send_error(id, "%s", problem);
		goto out;
	}
	if (server_pid < 0)
		start_fork_server();
	if (start_in_server(id, &request))
		goto out;
	channel = new_channel(id);
	if (!channel) {
		send_error(id, "out of memory");
		goto out;
	}
	channel->cgroup = take_command_cgroup();
	request.cgroup_id = channel->cgroup.id;
	if (!open_command_pipes(request.stdin_pipe, stdout_pipe, stderr_pipe, stdin_pipe) ||
	    pipe2(error_pipe, O_CLOEXEC) < 0) {
		send_error(id, "pipe: %s", strerror(errno));
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		send_error(id, "fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0)
		run_command(&request, stdin_pipe[0], stdout_pipe[1], stderr_pipe[1], error_pipe[1]);

	close_fd(&stdout_pipe[1]);
	close_fd(&stderr_pipe[1]);
	close_fd(&stdin_pipe[0]);
	close_fd(&error_pipe[1]);
	message_len = read_start_error(error_pipe[0], message, sizeof message);
	if (message_len > 0) {
		wait_for(pid);
		send_error(id, "%.*s", (int)message_len, message);
		goto out;
	}
	channel->pid = pid;
	channel->outputs[0].fd = stdout_pipe[0];
	channel->outputs[1].fd = stderr_pipe[0];
	channel->stdin_fd = stdin_pipe[1];
	stdout_pipe[0] = stderr_pipe[0] = stdin_pipe[1] = -1;
	channel->next = channels;
	channels = channel;
	channel = NULL;
	send_u32(FRAME_STARTED, id, (uint32_t)pid);
out:
	close_pipe(stdout_pipe);
	close_pipe(stderr_pipe);
	close_pipe(stdin_pipe);
	close_pipe(error_pipe);
	if (channel && channel->cgroup.id)
		release_command_cgroup(&channel->cgroup);
	free(channel);
	free(request.env);
}

/* Drops buffered stdin, acknowledging it so the host's window never stalls. */
static void drop_stdin(struct channel *channel)
{
	if (channel->stdin_len > 0)
		send_u32(FRAME_STDIN_ACK, channel->id, (uint32_t)channel->stdin_len);
	channel->stdin_len = 0;
	channel->stdin_start = 0;
	free(channel->stdin_buf);
	channel->stdin_buf = NULL;
	close_fd(&channel->stdin_fd);
}

static void flush_stdin(struct channel *channel)
{
	size_t written = 0;
	while (channel->stdin_len > 0) {
		ssize_t n = write(channel->stdin_fd, channel->stdin_buf + channel->stdin_start, channel->stdin_len);
		if (n > 0) {
			channel->stdin_start += (size_t)n;
			channel->stdin_len -= (size_t)n;
			written += (size_t)n;
		} else if (errno == EAGAIN) {
			break;
		} else if (errno != EINTR) {
			/* EPIPE: the command closed its stdin; what it did not read is dropped. */
			written += channel->stdin_len;
			channel->stdin_len = 0;
			close_fd(&channel->stdin_fd);
		}
	}
	if (written > 0)
		send_u32(FRAME_STDIN_ACK, channel->id, (uint32_t)written);
	if (channel->stdin_len == 0) {
		channel->stdin_start = 0;
		if (channel->stdin_eof)
			drop_stdin(channel);
	}
}

static void receive_stdin(struct channel *channel, const unsigned char *data, size_t len)
{
	if (len == 0) {
		channel->stdin_eof = true;
		if (channel->stdin_len == 0)
			drop_stdin(channel);
		return;
	}
	if (channel->stdin_fd < 0 || channel->stdin_eof) {
		send_u32(FRAME_STDIN_ACK, channel->id, (uint32_t)len);
		return;
	}
	if (channel->stdin_len + len > STDIN_WINDOW) {
		send_error(0, "channel %u: stdin beyond the %u byte window", channel->id, STDIN_WINDOW);
		return;
	}
	if (!channel->stdin_buf && !(channel->stdin_buf = malloc(STDIN_WINDOW))) {
		send_error(0, "channel %u: out of memory for stdin", channel->id);
		return;
	}
	if (channel->stdin_start + channel->stdin_len + len > STDIN_WINDOW) {
		memmove(channel->stdin_buf, channel->stdin_buf + channel->stdin_start, channel->stdin_len);
		channel->stdin_start = 0;
	}
	memcpy(channel->stdin_buf + channel->stdin_start + channel->stdin_len, data, len);
	channel->stdin_len += len;
}

static void receive_signal(struct channel *channel, uint32_t sig)
{
	/* Once reaped, the group is already killed and its id may belong to someone else. */
	if (channel->exited)
		return;
	/* Not started yet: sent once the server names its process. */
	if (channel->starting) {
		channel->pending_signal = sig;
		return;
	}
	/*
	 * No such group yet: the command's process has not reached its setsid (it makes its
	 * own session first thing, before it can start anything else), so it is signalled
	 * alone. A SIGNAL right behind the EXEC of a forked command lands here.
	 */
	int sent = kill(-channel->pid, (int)sig);
	if (sent < 0 && errno == ESRCH)
		sent = kill(channel->pid, (int)sig);
	if (sent < 0 && errno != ESRCH)
		send_error(0, "channel %u: signal %u: %s", channel->id, sig, strerror(errno));
}

static const char *set_time(const char *value)
{
	uint64_t ms;
	if (!parse_u64(value, UINT64_MAX, &ms))
		return "bad time";
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000 };
	if ((uint64_t)ts.tv_sec != ms / 1000)
		return "time out of range";
	if (clock_settime(CLOCK_REALTIME, &ts) < 0)
		return failed("clock_settime");
	return NULL;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static const char *add_entropy(const char *hex)
{
	size_t hex_len = strlen(hex), len = hex_len / 2;
	const char *problem = NULL;

	if (hex_len % 2 != 0)
		return "bad entropy hex";
	struct rand_pool_info *pool = malloc(sizeof *pool + len);
	if (!pool)
		return "out of memory";
	unsigned char *bytes = (unsigned char *)pool->buf;
	for (size_t i = 0; i < len; i++) {
		int high = hex_digit(hex[2 * i]), low = hex_digit(hex[2 * i + 1]);
		if (high < 0 || low < 0) {
			free(pool);
			return "bad entropy hex";
		}
		bytes[i] = (unsigned char)(high << 4 | low);
	}
	int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write_all(fd, bytes, len) < 0)
		problem = failed("write /dev/urandom");
	/* Writing mixes the bytes in; the ioctl also credits them, so getrandom stops blocking. */
	if (!problem && geteuid() == 0) {
		pool->entropy_count = (int)(len * 8);
		pool->buf_size = (int)len;
		if (ioctl(fd, RNDADDENTROPY, pool) < 0)
			problem = failed("RNDADDENTROPY");
		/*
		 * The kernel folds new input into its CRNG only at the next periodic reseed.
		 * Two guests restored from one snapshot share that CRNG state, so force the
		 * reseed now: from here on their random streams differ.
		 */
		else if (ioctl(fd, RNDRESEEDCRNG) < 0)
			problem = failed("RNDRESEEDCRNG");
	}
	if (fd >= 0)
		close(fd);
	free(pool);
	return problem;
}

static void receive_init(const unsigned char *payload, size_t len)
{
	const char *end = (const char *)payload + len, *position = (const char *)payload;
	const char *key, *value, *problem = NULL;

	if (!pairs_valid(payload, len)) {
		send_error(0, "INIT: malformed pairs");
		return;
	}
	while (!problem && next_pair(&position, end, &key, &value)) {
		if (strcmp(key, "time") == 0)
			problem = set_time(value);
		else if (strcmp(key, "entropy") == 0)
			problem = add_entropy(value);
		else if (strcmp(key, "hostname") == 0 && sethostname(value, strlen(value)) < 0)
			problem = failed("sethostname");
	}
	if (problem)
		send_error(0, "INIT: %s", problem);
	else
		send_frame(FRAME_INIT_OK, 0, NULL, 0);
}

static void receive_channel_frame(uint8_t type, uint32_t id, const unsigned char *payload, size_t len)
{
	struct channel *channel = find_channel(id);
	if (!channel) {
		send_error(id, "no such channel");
		return;
	}
	if (type == FRAME_STDIN) {
		receive_stdin(channel, payload, len);
	} else if (len != 4) {
		send_error(0, "channel %u: %s payload of %zu bytes, want 4", id,
			   type == FRAME_SIGNAL ? "SIGNAL" : "CREDIT", len);
	} else if (type == FRAME_SIGNAL) {
		receive_signal(channel, get_u32(payload));
	} else {
		channel->credit += get_u32(payload);
	}
}

static void receive_frame(uint8_t type, uint32_t id, const unsigned char *payload, size_t len)
{
	bool control = type == FRAME_PING || type == FRAME_INIT;
	if (control != (id == 0)) {
		send_error(0, "frame type 0x%02x on channel %u", type, id);
		return;
	}
	switch (type) {
	case FRAME_PING:
		if (len > MAX_PING_PAYLOAD)
			send_error(0, "PING payload of %zu bytes, at most %d", len, MAX_PING_PAYLOAD);
		else
			send_frame(FRAME_PONG, 0, payload, len);
		break;
	case FRAME_INIT:
		receive_init(payload, len);
		break;
	case FRAME_EXEC:
		if (find_channel(id))
			send_error(0, "EXEC on channel %u, which is in use", id);
		else
			start_command(id, payload, len);
		break;
	default:
		receive_channel_frame(type, id, payload, len);
		break;
	}
}

static bool known_type(uint8_t type)
{
	switch (type) {
	case FRAME_PING:
	case FRAME_INIT:
	case FRAME_EXEC:
	case FRAME_STDIN:
	case FRAME_SIGNAL:
	case FRAME_CREDIT:
		return true;
	default:
		return false;
	}
}

/* Returns why the (partial) header at p is malformed, or NULL. */
static const char *header_problem(const unsigned char *p, size_t available)
{
	if (available >= 1 && p[0] != MAGIC_0)
		return "bad magic";
	if (available >= 2 && p[1] != MAGIC_1)
		return "bad magic";
	if (available >= 3 && !known_type(p[2])) {
		snprintf(problem_text, sizeof problem_text, "unknown type 0x%02x", p[2]);
		return problem_text;
	}
	if (available >= 4 && p[3] != 0)
		return "non-zero flags";
	if (available >= HEADER_SIZE && get_u32(p + 8) > MAX_PAYLOAD) {
		snprintf(problem_text, sizeof problem_text, "payload length %u above %d", get_u32(p + 8),
			 MAX_PAYLOAD);
		return problem_text;
	}
	return NULL;
}

/* Offset of the next magic (or of a lone first magic byte at the end), else available. */
static size_t find_magic(const unsigned char *p, size_t available)
{
	for (size_t i = 0; i < available; i++)
		if (p[i] == MAGIC_0 && (i + 1 == available || p[i + 1] == MAGIC_1))
			return i;
	return available;
}

/* Handles every complete frame in frame_in and keeps the incomplete rest. */
static void decode_frames(void)
{
	size_t position = 0;
	for (;;) {
		unsigned char *p = frame_in + position;
		size_t available = frame_in_len - position;
		if (resyncing) {
			size_t skip = find_magic(p, available);
			position += skip;
			if (available - skip < 2)
				break;
			resyncing = false;
			continue;
		}
		if (available == 0)
			break;
		const char *problem = header_problem(p, available);
		if (problem) {
			send_error(0, "malformed frame: %s", problem);
			position += 1;
			resyncing = true;
			continue;
		}
		if (available < HEADER_SIZE)
			break;
		size_t len = get_u32(p + 8);
		if (available < HEADER_SIZE + len)
			break;
		receive_frame(p[2], get_u32(p + 4), p + HEADER_SIZE, len);
		position += HEADER_SIZE + len;
	}
	memmove(frame_in, frame_in + position, frame_in_len - position);
	frame_in_len -= position;
}

static _Noreturn void shut_down(int status)
{
	for (struct channel *channel = channels; channel; channel = channel->next)
		if (!channel->exited && channel->pid > 0)
			kill(-channel->pid, SIGKILL);
	if (server_pid > 0)
		kill(-server_pid, SIGKILL);
	exit(status);
}

static void read_console(void)
{
	/* The buffer holds a whole maximal frame, so there is always room for the next byte. */
	ssize_t n = read(console_in, frame_in + frame_in_len, sizeof frame_in - frame_in_len);
	if (n == 0) {
		warn("console closed");
		shut_down(0);
	}
	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return;
		die("console read");
	}
	frame_in_len += (size_t)n;
	decode_frames();
}

static struct channel *find_channel_by_pid(pid_t pid)
{
	for (struct channel *channel = channels; channel; channel = channel->next)
		if (channel->pid == pid && !channel->exited)
			return channel;
	return NULL;
}

static void command_exited(struct channel *channel, int status)
{
	channel->exited = true;
	if (WIFSIGNALED(status)) {
		channel->exit_signal = (uint32_t)WTERMSIG(status);
		channel->exit_code = 128 + WTERMSIG(status);
	} else {
		channel->exit_code = WEXITSTATUS(status);
	}
	drop_stdin(channel);
	channel->drain_deadline = now_ms() + DRAIN_TIMEOUT_MS;
}

static void reap_children(void)
{
	struct signalfd_siginfo info;
	while (read(sigchld_fd, &info, sizeof info) > 0) {
	}
	for (;;) {
		siginfo_t child = { 0 };
		int status;
		/* Peek first: while the zombie exists its pid, and so its group id, is not reused. */
		if (waitid(P_ALL, 0, &child, WEXITED | WNOHANG | WNOWAIT) < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ECHILD)
				return;
			die("waitid");
		}
		if (child.si_pid == 0)
			return;
		/* The server's reply may name it: read what is there first. */
		read_server_replies();
		struct channel *channel = find_channel_by_pid(child.si_pid);
		if (channel)
			kill(-channel->pid, SIGKILL);
		if (waitpid(child.si_pid, &status, 0) < 0) {
			if (errno == EINTR)
				continue;
			die("waitpid");
		}
		if (channel)
			command_exited(channel, status);
		else
			fork_server_child_exited(child.si_pid, status);
	}
}

/* Reads one chunk of output within the credit: 1 if it sent some, 0 at EOF, -1 if none now. */
static int read_output(struct channel *channel, struct output *output)
{
	uint64_t want = channel->credit < MAX_PAYLOAD ? channel->credit : MAX_PAYLOAD;
	if (output->left >= 0 && (uint64_t)output->left < want)
		want = (uint64_t)output->left;
	if (output->fd < 0 || want == 0)
		return -1;
	ssize_t n = read(output->fd, frame_out + HEADER_SIZE, (size_t)want);
	if (n > 0) {
		channel->credit -= (uint64_t)n;
		if (output->left > 0 && (output->left -= n) == 0)
			close_fd(&output->fd);
		send_frame(output->frame_type, channel->id, frame_out + HEADER_SIZE, (size_t)n);
		return 1;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return -1;
	close_fd(&output->fd);
	return 0;
}

/* True when the pipe is empty and nobody can write to it any more. */
static bool at_eof(int fd)
{
	struct pollfd pipe = { .fd = fd, .events = POLLIN };
	return poll(&pipe, 1, 0) == 1 && !(pipe.revents & POLLIN) && (pipe.revents & (POLLHUP | POLLERR));
}

/*
 * After the command exited and its group was killed, the pipes are read to EOF. Only
 * processes that left the group can hold them open longer: at the deadline the agent
 * sends what the pipes hold at that moment and stops waiting. Output beyond the credit
 * waits for CREDIT. Returns true once both pipes are done.
 */
static bool output_done(struct channel *channel, int64_t now)
{
	bool deadline_reached = !channel->past_deadline && now >= channel->drain_deadline;
	if (deadline_reached)
		channel->past_deadline = true;
	for (int i = 0; i < 2; i++) {
		struct output *output = &channel->outputs[i];
		int buffered = 0;
		/* Without credit the pipe is not polled, so EOF is noticed here. */
		if (output->fd >= 0 && at_eof(output->fd))
			close_fd(&output->fd);
		if (output->fd < 0 || !deadline_reached)
			continue;
		if (ioctl(output->fd, FIONREAD, &buffered) < 0)
			buffered = 0;
		output->left = buffered;
		if (buffered == 0)
			close_fd(&output->fd);
		while (read_output(channel, output) > 0) {
		}
	}
	return channel->outputs[0].fd < 0 && channel->outputs[1].fd < 0;
}

/* Sends EXIT for every command whose output is all sent, and forgets it. */
static void finish_channels(void)
{
	int64_t now = now_ms();
	struct channel **link = &channels;
	while (*link) {
		struct channel *channel = *link;
		if (channel->discard) {
			*link = channel->next;
			free_channel(channel);
		} else if (channel->exited && output_done(channel, now)) {
			unsigned char payload[8];
			put_u32(payload, (uint32_t)channel->exit_code);
			put_u32(payload + 4, channel->exit_signal);
			send_frame(FRAME_EXIT, channel->id, payload, sizeof payload);
			*link = channel->next;
			free_channel(channel);
		} else {
			link = &channel->next;
		}
	}
}

/* Milliseconds until the next drain deadline, or -1. */
static int poll_timeout(void)
{
	int64_t now = now_ms(), timeout = -1;
	for (struct channel *channel = channels; channel; channel = channel->next) {
		if (!channel->exited || channel->past_deadline)
			continue;
		int64_t left = channel->drain_deadline - now;
		if (left < 0)
			left = 0;
		if (timeout < 0 || left < timeout)
			timeout = left;
	}
	return (int)timeout;
}

static struct pollfd *poll_fds;
static struct poll_slot *poll_slots;
static size_t poll_capacity;

static void add_poll(size_t *count, int fd, short events, struct channel *channel, struct output *output)
{
	if (*count == poll_capacity) {
		size_t capacity = poll_capacity ? poll_capacity * 2 : 64;
		struct pollfd *fds = realloc(poll_fds, capacity * sizeof *fds);
		if (fds)
			poll_fds = fds;
		struct poll_slot *slots = realloc(poll_slots, capacity * sizeof *slots);
		if (slots)
			poll_slots = slots;
		if (!fds || !slots)
			die("realloc");
		poll_capacity = capacity;
	}
	poll_fds[*count] = (struct pollfd){ .fd = fd, .events = events };
	poll_slots[*count] = (struct poll_slot){ .channel = channel, .output = output };
	(*count)++;
}

/* Slots 0 and 1 are the console and SIGCHLD; then the pipes that can make progress. */
static size_t build_poll_set(void)
{
	size_t count = 0;
	add_poll(&count, console_in, POLLIN, NULL, NULL);
	add_poll(&count, sigchld_fd, POLLIN, NULL, NULL);
	if (server_socket >= 0)
		add_poll(&count, server_socket, POLLIN, NULL, NULL);
	for (struct channel *channel = channels; channel; channel = channel->next) {
		if (channel->starting || channel->discard)
			continue;
		/* Without credit the pipes are not read, so the command blocks in write. */
		for (int i = 0; i < 2 && channel->credit > 0; i++)
			if (channel->outputs[i].fd >= 0)
				add_poll(&count, channel->outputs[i].fd, POLLIN, channel, &channel->outputs[i]);
		if (channel->stdin_len > 0 && channel->stdin_fd >= 0)
			add_poll(&count, channel->stdin_fd, POLLOUT, channel, NULL);
	}
	return count;
}

/* Channels are only freed in finish_channels, so slot pointers stay valid in here. */
static void handle_pipe(struct poll_slot *slot, short revents)
{
	struct channel *channel = slot->channel;
	if (!revents)
		return;
	if (!channel)
		read_server_replies();
	else if (slot->output)
		read_output(channel, slot->output);
	else if (channel->stdin_fd >= 0)
		flush_stdin(channel);
}

static _Noreturn void run_loop(void)
{
	for (;;) {
		size_t count = build_poll_set();
		if (poll(poll_fds, count, poll_timeout()) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (poll_fds[0].revents)
			read_console();
		if (poll_fds[1].revents)
			reap_children();
		for (size_t i = 2; i < count; i++)
			handle_pipe(&poll_slots[i], poll_fds[i].revents);
		finish_channels();
	}
}

/* Pipes must never land on 0-2, where a command's dup2 would clobber them. */
static void ensure_standard_fds(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		int null_fd = open("/dev/null", O_RDWR);
		if (null_fd < 0)
			die("open /dev/null");
		if (null_fd != fd)
			die("open /dev/null: unexpected fd");
	}
}

/* Port 0's node in /dev, or NULL while the kernel has not made it yet. */
static const char *find_port0(void)
{
	static char path[64];
	const char *found = NULL;
	DIR *ports = opendir("/sys/class/virtio-ports");
	struct dirent *entry;
	while (ports && !found && (entry = readdir(ports))) {
		size_t len = strlen(entry->d_name);
		if (strncmp(entry->d_name, "vport", 5) == 0 && len < sizeof path - 5 &&
		    strcmp(entry->d_name + len - 2, "p0") == 0) {
			snprintf(path, sizeof path, "/dev/%s", entry->d_name);
			if (access(path, F_OK) == 0)
				found = path;
		}
	}
	if (ports)
		closedir(ports);
	return found;
}

/*
 * Opens the virtio console's port 0, where the host talks to the agent. The image's
 * kernel keeps every port a generic port, /dev/vport<device>p<port>, read and written
 * without a tty (image/patches/virtio-console-generic-ports.patch). A stock kernel makes
 * every port v86 offers a console instead: port 0 is the tty /dev/hvc0, and its vport
 * node refuses to open (ENXIO). The driver adds ports from a work queue once the host
 * has announced them, which may still be pending when init starts the agent: wait for
 * one, 10 s at most.
 */
static int open_default_console(void)
{
	const struct timespec millisecond = { 0, 1000000 };
	for (int waited = 0; waited < 10000; waited++) {
		const char *port = find_port0();
		if (port) {
			int fd = open(port, O_RDWR | O_NOCTTY | O_CLOEXEC);
			if (fd >= 0)
				return fd;
			if (errno != ENXIO)
				die(port);
		}
		if (access("/dev/hvc0", F_OK) == 0)
			return open("/dev/hvc0", O_RDWR | O_NOCTTY | O_CLOEXEC);
		nanosleep(&millisecond, NULL);
	}
	errno = ENODEV;
	return -1;
}

/* path NULL: the virtio console's port 0. */
static void open_console(const char *path, bool use_stdio)
{
	if (use_stdio) {
		console_in = 0;
		console_out = 1;
		return;
	}
	int fd = path ? open(path, O_RDWR | O_NOCTTY | O_CLOEXEC) : open_default_console();
	if (fd < 0)
		die(path ? path : "the virtio console's port 0 (/dev/vport*p0 or /dev/hvc0)");
	if (isatty(fd)) {
		struct termios raw;
		if (tcgetattr(fd, &raw) < 0)
			die("tcgetattr");
		cfmakeraw(&raw);
		raw.c_cc[VMIN] = 1;
		raw.c_cc[VTIME] = 0;
		if (tcsetattr(fd, TCSANOW, &raw) < 0)
			die("tcsetattr");
	}
	console_in = console_out = fd;
}

static void setup_signals(void)
{
	sigset_t sigchld;
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		die("signal SIGPIPE");
	sigemptyset(&sigchld);
	sigaddset(&sigchld, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &sigchld, NULL) < 0)
		die("sigprocmask");
	sigchld_fd = signalfd(-1, &sigchld, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigchld_fd < 0)
		die("signalfd");
}

/* Many concurrent commands need 3 fds each; commands get the usual limit back. */
static void raise_fd_limit(void)
{
	struct rlimit raised;
	if (getrlimit(RLIMIT_NOFILE, &original_nofile) < 0)
		die("getrlimit");
	raised = original_nofile;
	raised.rlim_cur = raised.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &raised) < 0)
		warn("setrlimit: %s", strerror(errno));
}

static _Noreturn void run_agent(const char *console_path, bool use_stdio)
{
	ensure_standard_fds();
	setup_signals();
	if (write_oom_score_adj("-1000") < 0)
		warn("oom_score_adj: %s", strerror(errno));
	raise_fd_limit();
	/* Commands' orphans are re-parented to the agent, which reaps them. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		warn("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
	if (setpriority(PRIO_PROCESS, 0, -20) < 0)
		warn("setpriority: %s", strerror(errno));
	if (!use_stdio)
		setup_cgroups();
	open_console(console_path, use_stdio);
	start_fork_server();
	wait_for_fork_server();
	send_ready();
	run_loop();
}

static void log_to_kernel(const char *message)
{
	int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		fd = open("/dev/ttyS0", O_WRONLY | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (write(fd, message, strlen(message)) < 0) {
		/* Nowhere left to say it: power off regardless. */
	}
	close(fd);
}

/* PID 1: reap every orphan; when the agent dies, the machine goes with it. */
static _Noreturn void supervise(pid_t agent)
{
	for (;;) {
		pid_t pid = waitpid(-1, NULL, 0);
		if (pid == agent || (pid < 0 && errno == ECHILD))
			break;
	}
	/* "<2>" (critical): printed on the console whatever the kernel's loglevel, so the host reads it. */
	log_to_kernel("<2>v86box-agent: agent exited\n");
	reboot(RB_POWER_OFF);
	/* reboot only returns on failure; PID 1 exiting then panics the kernel, which the host sees too. */
	_exit(1);
}

static _Noreturn void usage(void)
{
	fputs("usage: v86box-agent [--console PATH | --stdio]\n", stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *console_path = NULL;
	bool use_stdio = false;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--console") == 0 && i + 1 < argc)
			console_path = argv[++i];
		else if (strcmp(argv[i], "--stdio") == 0)
			use_stdio = true;
		else
			usage();
	}
	if (getpid() == 1) {
		pid_t agent = fork();
		if (agent < 0) {
			log_to_kernel("v86box-agent: fork failed\n");
			reboot(RB_POWER_OFF);
			_exit(1);
		}
		if (agent > 0)
			supervise(agent);
	}
	run_agent(console_path, use_stdio);
}
