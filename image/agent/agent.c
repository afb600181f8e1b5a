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
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define AGENT_VERSION "0.2.0"
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
	 * Handed to a spare of the shell server (pid) and not yet reported: the command's
	 * ends of its pipes and its request stay open here until the subshell has opened
	 * them, and its output is not read yet.
	 */
	bool starting;
	int handoff[4];
	bool discard; /* the start failed and ERROR was sent: free without EXIT */
	bool cgroup; /* has a cgroup of its own, removed with the channel */
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

/* MemTotal from /proc/meminfo in KiB; 0 if unknown. */
static unsigned long mem_total_kb(void)
{
	unsigned long kb = 0;
	FILE *file = fopen("/proc/meminfo", "re");
	if (!file)
		return 0;
	if (fscanf(file, "MemTotal: %lu kB", &kb) != 1)
		kb = 0;
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
 * agent, the shell server and their page cache still have room. Memory accounting costs
 * ~10 % more emulated instructions per back-to-back command (measured); the controller
 * stops at that one group, as a memory group per command also cost ~7 % more on the
 * spare path, for a cap nobody asked for. Without cgroups commands just run uncapped.
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
	/* Room left for the kernel, the agent, the shell server and the page cache of the
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

/* Makes the command's cgroup; false (and it runs uncapped) if that fails. */
static bool make_command_cgroup(uint32_t id)
{
	char path[96], limit[16];
	if (!use_cgroups)
		return false;
	command_cgroup_path(id, path, sizeof path, NULL);
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return false;
	command_cgroup_path(id, path, sizeof path, "pids.max");
	snprintf(limit, sizeof limit, "%d", COMMAND_PIDS_MAX);
	return write_text(path, limit) == 0;
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

/* Removes it once empty; a process that escaped keeps it (and its cap) alive. */
static void remove_command_cgroup(uint32_t id)
{
	char path[96];
	command_cgroup_path(id, path, sizeof path, NULL);
	rmdir(path);
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
	for (int i = 0; i < 4; i++)
		close_fd(&channel->handoff[i]);
	if (channel->cgroup)
		remove_command_cgroup(channel->id);
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

	char *argv[] = { "bash", "-c", (char *)request->cmd, NULL };
	execve("/bin/bash", argv, (char **)env);
	fail_start(error_fd, "exec", "/bin/bash");
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
	for (int i = 0; i < 4; i++)
		channel->handoff[i] = -1;
	channel->credit = INITIAL_CREDIT;
	return channel;
}

static void receive_signal(struct channel *channel, uint32_t sig);

/*
 * The shell server.
 *
 * Under v86 a fresh `bash -c` per command costs millions of emulated instructions
 * (execve, the dynamic loader, bash's start-up), and even a fork of bash costs ~0.6
 * million. So the agent starts one bash at boot, the server, and keeps one "spare"
 * ready before it is needed: a subshell forked from the server that is already the
 * agent's child, waiting for a request. A command then only costs what it does.
 *
 * - The server reads a line from its stdin per spare wanted and forks a job (its own
 *   process group, thanks to `set -m`), which forks the spare and exits: the spare is
 *   re-parented to the agent (a child subreaper), so the agent reaps it and gets its
 *   exit status as it does for a `bash -c` child. Until the job is gone, the spare
 *   waits (were it to exit first, the job's bash would reap it).
 * - The spare reports "spare PID", then reads one request line "ID FD" from the
 *   requests pipe: FD is a memfd of the agent holding the request. It opens its
 *   pipes through /proc/AGENT/fd, reports "ID PID" (or "ID !why"), and evals the
 *   command at the top level of a subshell, from the clean environment a `bash -c`
 *   child would get. The agent asks for the next spare once a spare took its request,
 *   so only one spare ever reads the requests pipe.
 *
 * What differs from `bash -c`, so such commands take the exec path: `$$` (a subshell
 * keeps the server's), a uid or gid, environment names bash treats specially, and a
 * cwd that is not a directory (the exec path reports chdir's error).
 */

/*
 * Runs in the server (a `bash -c` with __v86box_agent, __v86box_requests and
 * __v86box_idle set before it). FUNCNAME, `return`, `break` and `local` behave as in
 * `bash -c` because the command is not eval'd inside a function or loop. A subshell
 * can only sleep without a fork by reading a pipe nobody writes to: the idle pipe. Its
 * EOF (or the requests pipe's) means the agent is gone, and the spare exits.
 */
static const char shell_server_script[] =
	"set -m\n"
	"__v86box_fail() { printf '%s !%s\\n' \"$__v86box_id\" \"$1\" >&$__v86box_report; exit 127; }\n"
	"__v86box_adopted() { local -a s; read -r -a s </proc/$BASHPID/stat && [[ ${s[3]} == \"$__v86box_agent\" ]]; }\n"
	"__v86box_prepare() {\n"
	"\tset +m\n"
	"\texec {__v86box_report}>&1\n"
	"\tlocal p=/proc/$__v86box_agent/fd r i o e d n v\n"
	"\tlocal -a env=()\n"
	"\tif ! __v86box_adopted; then\n"
	"\t\texec {r}<\"$p/$__v86box_idle\" || exit 127\n"
	"\t\tuntil __v86box_adopted; do read -r -t 0.002 -u $r; (( $? > 128 )) || exit 0; done\n"
	"\t\texec {r}<&-\n"
	"\tfi\n"
	"\texec {r}<\"$p/$__v86box_requests\" || exit 127\n"
	"\tprintf 'spare %s\\n' \"$BASHPID\" >&$__v86box_report\n"
	"\tread -r -u $r __v86box_id __v86box_fd || exit 0\n"
	"\texec {r}<&-\n"
	"\texec {r}<\"$p/$__v86box_fd\" || __v86box_fail 'cannot open the request'\n"
	"\tIFS= read -r -d '' -u $r i; IFS= read -r -d '' -u $r o; IFS= read -r -d '' -u $r e\n"
	"\tIFS= read -r -d '' -u $r d; IFS= read -r -d '' -u $r n\n"
	"\twhile (( n-- > 0 )); do IFS= read -r -d '' -u $r v; env+=(\"$v\"); done\n"
	"\tIFS= read -r -d '' -u $r __v86box_cmd\n"
	"\texec {r}<&-\n"
	"\tif [[ $i ]]; then exec <\"$p/$i\"; else exec </dev/null; fi || __v86box_fail 'cannot open stdin'\n"
	"\texec >\"$p/$o\" 2>\"$p/$e\" || __v86box_fail 'cannot open stdout and stderr'\n"
	"\tif [[ $d ]]; then cd -- \"$d\" 2>/dev/null || __v86box_fail \"chdir $d: No such file or directory\"; unset OLDPWD; fi\n"
	"\t(( ${#env[@]} == 0 )) || export -- \"${env[@]}\"\n"
	"\tprintf '%s %s\\n' \"$__v86box_id\" \"$BASHPID\" >&$__v86box_report\n"
	"\texec {__v86box_report}>&-\n"
	"\tunset -f __v86box_fail __v86box_adopted __v86box_prepare\n"
	"}\n"
	"while read -r __v86box_wanted; do\n"
	"\t( set -m; ( __v86box_prepare; eval \"unset -v __v86box_agent __v86box_requests __v86box_idle __v86box_id\"\\\n"
	"\t\t\" __v86box_fd __v86box_report __v86box_wanted; BASH_EXECUTION_STRING=\\$__v86box_cmd; unset -v __v86box_cmd;\"\\\n"
	"\t\t\" : bash; $__v86box_cmd\" ) & ) &\n"
	"\twait $!\n"
	"done\n";

/*
 * The pipes every server and spare share live as long as the agent: a spare outlives
 * the server that forked it. The agent keeps both ends of each.
 */
static int server_reports[2] = { -1, -1 }; /* the servers' and spares' stdout */
static int spare_requests[2] = { -1, -1 }; /* the waiting spare opens the read end */
static int server_idle[2] = { -1, -1 }; /* a pipe nobody writes to: spares wait on it */
static char server_report_buf[4096];
static size_t server_report_len;

static pid_t server_pid = -1;
static int server_wants = -1; /* write end of the server's stdin: a line per spare wanted */
static bool spare_wanted; /* asked the server for one that has not reported yet */
static pid_t spare_pid = -1; /* the spare waiting for a request, or -1 */
static bool request_in_flight; /* a spare is reading its request line from the pipe */
static int64_t spare_due_ms; /* when to ask for a spare if the guest is still idle; 0: not due */

/* Back-to-back commands take the exec path rather than compete with a spare's forks. */
#define SPARE_IDLE_MS 20

static bool open_server_pipes(void)
{
	if (server_reports[0] >= 0)
		return true;
	if (pipe2(server_reports, O_CLOEXEC) < 0 || pipe2(spare_requests, O_CLOEXEC) < 0 ||
	    pipe2(server_idle, O_CLOEXEC) < 0 || !set_nonblocking(server_reports[0]) ||
	    !set_nonblocking(spare_requests[0]) || !set_nonblocking(spare_requests[1])) {
		warn("shell server pipes: %s", strerror(errno));
		for (int i = 0; i < 2; i++) {
			close_fd(&server_reports[i]);
			close_fd(&spare_requests[i]);
			close_fd(&server_idle[i]);
		}
		return false;
	}
	return true;
}

static void want_spare(void);

/* Asks for a spare once no command has run for SPARE_IDLE_MS. */
static void want_spare_when_idle(void)
{
	if (spare_pid < 0 && !spare_wanted)
		spare_due_ms = now_ms() + SPARE_IDLE_MS;
}

/* Called by the main loop: the spare is due and nothing runs. */
static void make_spare_if_due(int64_t now)
{
	if (!spare_due_ms || now < spare_due_ms)
		return;
	spare_due_ms = 0;
	for (struct channel *channel = channels; channel; channel = channel->next)
		if (!channel->exited) {
			want_spare_when_idle();
			return;
		}
	want_spare();
}

/* Only when no spare is reading the requests pipe, so two never read it at once. */
static void want_spare(void)
{
	if (server_wants < 0 || spare_wanted || spare_pid > 0 || request_in_flight)
		return;
	if (write(server_wants, "\n", 1) == 1)
		spare_wanted = true;
}

/* Starts a server and asks for a spare; on failure commands take the exec path. */
static void start_shell_server(void)
{
	int wants[2] = { -1, -1 }, null_fd = -1;
	char *script = NULL;

	if (!open_server_pipes())
		return;
	if (pipe2(wants, O_CLOEXEC) < 0 || !set_nonblocking(wants[1]) ||
	    (null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC)) < 0 ||
	    asprintf(&script, "__v86box_agent=%d __v86box_requests=%d __v86box_idle=%d\n%s", (int)getpid(),
		     spare_requests[0], server_idle[0], shell_server_script) < 0) {
		warn("shell server: %s", strerror(errno));
		script = NULL;
		goto out;
	}
	struct exec_request request = { .cmd = script };
	pid_t pid = fork();
	if (pid < 0) {
		warn("shell server: fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0)
		run_command(&request, wants[0], server_reports[1], null_fd, -1);
	server_pid = pid;
	server_wants = wants[1];
	wants[1] = -1;
	spare_wanted = false;
	want_spare();
out:
	close_fd(&wants[0]);
	close_fd(&wants[1]);
	close_fd(&null_fd);
	free(script);
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

/* Names a starting bash reads, or that `export` refuses: those need a real `bash -c`. */
static bool shell_reads_at_start(const char *name, size_t len)
{
	static const char *const names[] = { "SHELLOPTS", "ENV", "POSIXLY_CORRECT", "IFS", "PS4", "EUID",
					     "UID", "PPID", "HOSTNAME" };
	if (len >= 4 && strncmp(name, "BASH", 4) == 0)
		return true;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strlen(names[i]) == len && strncmp(names[i], name, len) == 0)
			return true;
	return false;
}

static bool server_can_run(const struct exec_request *request)
{
	struct stat st;
	if ((server_wants < 0 && spare_pid < 0) || request->set_ids)
		return false;
	if (strstr(request->cmd, "$$") || strstr(request->cmd, "${$"))
		return false;
	if (request->cwd && (stat(request->cwd, &st) < 0 || !S_ISDIR(st.st_mode)))
		return false;
	for (size_t i = 0; i < request->env_count; i++) {
		const char *entry = request->env[i];
		size_t len = (size_t)(strchr(entry, '=') - entry);
		if (!is_shell_name(entry, len) || shell_reads_at_start(entry, len))
			return false;
	}
	return true;
}

static bool write_field(FILE *file, const char *text)
{
	return fputs(text, file) >= 0 && fputc('\0', file) != EOF;
}

/* The request memfd: NUL-terminated stdin fd (or empty), stdout fd, stderr fd, cwd, env count, env, cmd. */
static int write_request(const struct exec_request *request, int stdin_fd, int stdout_fd, int stderr_fd)
{
	char number[16];
	int fd = memfd_create("v86box-request", MFD_CLOEXEC);
	if (fd < 0)
		return -1;
	int copy = dup(fd);
	FILE *file = copy < 0 ? NULL : fdopen(copy, "w");
	if (!file) {
		close_fd(&copy);
		close(fd);
		return -1;
	}
	bool ok = true;
	if (stdin_fd >= 0)
		snprintf(number, sizeof number, "%d", stdin_fd);
	ok = ok && write_field(file, stdin_fd >= 0 ? number : "");
	snprintf(number, sizeof number, "%d", stdout_fd);
	ok = ok && write_field(file, number);
	snprintf(number, sizeof number, "%d", stderr_fd);
	ok = ok && write_field(file, number) && write_field(file, request->cwd ? request->cwd : "");
	snprintf(number, sizeof number, "%zu", request->env_count);
	ok = ok && write_field(file, number);
	for (size_t i = 0; ok && i < request->env_count; i++)
		ok = write_field(file, request->env[i]);
	ok = ok && write_field(file, request->cmd);
	if (fclose(file) != 0 || !ok) {
		close(fd);
		return -1;
	}
	return fd;
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

/* Gives the command to the waiting spare: first its cgroup, then its request line. */
static bool hand_to_spare(uint32_t id, int request_fd, bool cgroup)
{
	char line[48];
	if (cgroup)
		enter_command_cgroup(id, spare_pid);
	int len = snprintf(line, sizeof line, "%u %d\n", id, request_fd);
	/* The pipe is empty (one line at a time), so the line goes in whole. */
	if (write(spare_requests[1], line, (size_t)len) != len)
		return false;
	request_in_flight = true;
	return true;
}

/*
 * Hands the command to the shell server. Returns false, having changed nothing, when
 * the exec path must run it instead.
 */
static bool start_in_server(uint32_t id, const struct exec_request *request)
{
	int stdout_pipe[2] = { -1, -1 }, stderr_pipe[2] = { -1, -1 }, stdin_pipe[2] = { -1, -1 };
	int request_fd = -1;
	struct channel *channel = NULL;
	bool started = false;

	if (!server_can_run(request))
		return false;
	/* Without a spare ready, waiting for one costs more than a bash start-up. */
	if (spare_pid < 0) {
		want_spare_when_idle();
		return false;
	}
	if (!open_command_pipes(request->stdin_pipe, stdout_pipe, stderr_pipe, stdin_pipe))
		goto out;
	request_fd = write_request(request, stdin_pipe[0], stdout_pipe[1], stderr_pipe[1]);
	if (request_fd < 0 || !(channel = new_channel(id)))
		goto out;
	channel->cgroup = make_command_cgroup(id);
	if (!hand_to_spare(id, request_fd, channel->cgroup)) {
		if (channel->cgroup)
			remove_command_cgroup(id);
		goto out;
	}
	channel->pid = spare_pid;
	spare_pid = -1;
	channel->starting = true;
	channel->outputs[0].fd = stdout_pipe[0];
	channel->outputs[1].fd = stderr_pipe[0];
	channel->stdin_fd = stdin_pipe[1];
	channel->handoff[0] = stdout_pipe[1];
	channel->handoff[1] = stderr_pipe[1];
	channel->handoff[2] = stdin_pipe[0];
	channel->handoff[3] = request_fd;
	stdout_pipe[0] = stdout_pipe[1] = stderr_pipe[0] = stderr_pipe[1] = -1;
	stdin_pipe[0] = stdin_pipe[1] = request_fd = -1;
	channel->next = channels;
	channels = channel;
	channel = NULL;
	started = true;
out:
	close_pipe(stdout_pipe);
	close_pipe(stderr_pipe);
	close_pipe(stdin_pipe);
	close_fd(&request_fd);
	free(channel);
	return started;
}

/* Ends a command that never started, with ERROR instead of EXIT. */
static void fail_start_in_server(struct channel *channel, const char *why)
{
	channel->starting = false;
	for (int i = 0; i < 4; i++)
		close_fd(&channel->handoff[i]);
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

/* One report line: "spare PID", "ID PID" once a command holds its pipes, or "ID !why". */
static void handle_report(char *line)
{
	char *rest;
	if (strncmp(line, "spare ", 6) == 0) {
		spare_pid = (pid_t)strtol(line + 6, NULL, 10);
		spare_wanted = false;
		return;
	}
	unsigned long id = strtoul(line, &rest, 10);
	struct channel *channel = *rest == ' ' ? find_starting_channel((uint32_t)id) : NULL;
	if (!channel)
		return;
	/* It read its request line: the requests pipe is free for the next spare. That
	 * spare is made once this command is done (or another one waits), so the forks
	 * do not compete with the command; between commands the guest is idle anyway. */
	request_in_flight = false;
	if (rest[1] == '!') {
		fail_start_in_server(channel, rest + 2);
		return;
	}
	channel->starting = false;
	for (int i = 0; i < 4; i++)
		close_fd(&channel->handoff[i]);
	send_u32(FRAME_STARTED, channel->id, (uint32_t)channel->pid);
}

static void read_server_reports(void)
{
	while (server_reports[0] >= 0) {
		ssize_t n = read(server_reports[0], server_report_buf + server_report_len,
				 sizeof server_report_buf - 1 - server_report_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		server_report_len += (size_t)n;
		server_report_buf[server_report_len] = '\0';
		char *line = server_report_buf, *newline;
		while ((newline = strchr(line, '\n'))) {
			*newline = '\0';
			handle_report(line);
			line = newline + 1;
		}
		server_report_len -= (size_t)(line - server_report_buf);
		memmove(server_report_buf, line, server_report_len);
		/* Lines are short; a full buffer without one is garbage. */
		if (server_report_len == sizeof server_report_buf - 1)
			server_report_len = 0;
	}
}

/* Drops a request line a dead spare left (partly) unread, so no other spare takes it. */
static void drain_spare_requests(void)
{
	char scratch[256];
	while (spare_requests[0] >= 0 && read(spare_requests[0], scratch, sizeof scratch) > 0) {
	}
}

static void command_exited(struct channel *channel, int status);

/*
 * A child of the agent that is not a running command exited: the server, the waiting
 * spare, or a spare that died (was killed) before it reported. True if it was one of them.
 */
static bool shell_server_child_exited(pid_t pid, int status)
{
	if (pid == server_pid) {
		/* Spares it forked live on. A new server starts on the next EXEC, so one that
		 * dies right after starting is not restarted in a loop. */
		close_fd(&server_wants);
		server_pid = -1;
		spare_wanted = false;
		return true;
	}
	if (pid == spare_pid) {
		spare_pid = -1;
		want_spare_when_idle();
		return true;
	}
	for (struct channel *channel = channels; channel; channel = channel->next) {
		if (channel->starting && channel->pid == pid) {
			/* Its process existed, so it ends as a command killed early would. */
			drain_spare_requests();
			request_in_flight = false;
			channel->starting = false;
			for (int i = 0; i < 4; i++)
				close_fd(&channel->handoff[i]);
			send_u32(FRAME_STARTED, channel->id, (uint32_t)pid);
			command_exited(channel, status);
			want_spare_when_idle();
			return true;
		}
	}
	return false;
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
		start_shell_server();
	if (start_in_server(id, &request))
		goto out;
	channel = new_channel(id);
	if (!channel) {
		send_error(id, "out of memory");
		goto out;
	}
	channel->cgroup = make_command_cgroup(id);
	if (channel->cgroup)
		request.cgroup_id = id;
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
	if (channel && channel->cgroup)
		remove_command_cgroup(id);
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
	if (kill(-channel->pid, (int)sig) < 0 && errno != ESRCH)
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
	if (spare_pid > 0)
		kill(-spare_pid, SIGKILL);
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
		/* A spare reports before it runs a command, so its reports are already here. */
		read_server_reports();
		struct channel *channel = find_channel_by_pid(child.si_pid);
		if (channel && channel->starting)
			channel = NULL;
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
			shell_server_child_exited(child.si_pid, status);
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
			want_spare_when_idle();
		} else {
			link = &channel->next;
		}
	}
}

/* Milliseconds until the next drain deadline or due spare, or -1. */
static int poll_timeout(void)
{
	int64_t now = now_ms(), timeout = -1;
	if (spare_due_ms)
		timeout = spare_due_ms > now ? spare_due_ms - now : 0;
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
	if (server_reports[0] >= 0)
		add_poll(&count, server_reports[0], POLLIN, NULL, NULL);
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
		read_server_reports();
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
		make_spare_if_due(now_ms());
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

static void open_console(const char *path, bool use_stdio)
{
	if (use_stdio) {
		console_in = 0;
		console_out = 1;
		return;
	}
	int fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		die(path);
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
	/* Commands' orphans, and the shell server's subshells, are re-parented to the agent. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		warn("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
	if (setpriority(PRIO_PROCESS, 0, -20) < 0)
		warn("setpriority: %s", strerror(errno));
	if (!use_stdio)
		setup_cgroups();
	open_console(console_path, use_stdio);
	start_shell_server();
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
	const char *console_path = "/dev/hvc0";
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
