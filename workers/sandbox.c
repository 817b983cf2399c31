/* Seccomp allow-lists, one per worker, each call with why it is there.
 *
 * A worker's list is the shared list (the framework: libuv, the socketpair to
 * the supervisor, malloc, signals, time) plus its protocol's additions, which
 * its descriptor gives (workers/protocols.c: the calls, and whether it opens
 * connections, starts threads or runs programs). The
 * filter goes in after the worker's init() (its library is set up, its
 * configuration read), just before it says ready, and covers every thread
 * (TSYNC). The default action is SCMP_ACT_TRAP: the kernel skips the call and
 * raises SIGSYS, whose handler writes the call's name to stderr (the crash log
 * keeps it) and dies of SIGSYS with the default action; where the handler
 * cannot run (SIGSYS blocked, a child after exec) the kernel kills the process
 * with SIGSYS all the same. The supervisor sees "killed by signal 31 (SIGSYS)"
 * and restarts the worker like any crash.
 *
 * How the lists were found: every worker run under `strace -f` across its
 * integration tests with UCGW_SECCOMP_PERMISSIVE=1 (tests/tools/sandbox-trace.sh),
 * keeping the calls after the filter was loaded. A library update that needs a
 * new call shows up as a SIGSYS crash log naming it.
 *
 * Architecture: the filter is built for the native architecture; a call made
 * through another ABI (int 0x80 on x86-64) is killed (libseccomp's bad-arch
 * action). */
#include "workers/sandbox.h"

#include "workers/protocols.h"

#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

/* ---- the lists ---- */

/* Every worker: the framework (workers/worker.c), libuv, glibc. */
static const char *const common[] = {
	/* the socketpair to the supervisor (fd 3): frames, and files as SCM_RIGHTS */
	"read", "write", "readv", "writev", "recvmsg", "sendmsg", "recvfrom", "sendto",
	/* file jobs arrive as descriptors: read them (pread: from any offset, resumed uploads) */
	"pread64", "lseek",
	"close",
	/* libuv's loop, its async handle (eventfd) and signal pipe */
	"epoll_wait", "epoll_pwait", "epoll_ctl", "epoll_create1", "poll", "ppoll",
	"eventfd2", "pipe2",
	/* descriptors: non-blocking and close-on-exec flags, fstat of a job's file */
	"fcntl", "fstat", "newfstatat", "statx",
	/* memory: malloc, thread stacks, OpenSSL's secure heap */
	"mmap", "munmap", "mremap", "mprotect", "brk", "madvise",
	/* signals: SIGTERM/SIGINT through libuv, the crash handlers, raise() */
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
	"tgkill", "getpid", "gettid",
	/* time: timers, timestamps, back-off sleeps */
	"clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep", "clock_nanosleep",
	/* locks and condition variables (libuv, OpenSSL, the sftp thread) */
	"futex", "sched_yield",
	/* random numbers: OpenSSL, jitter, JWT ids */
	"getrandom",
	/* identity checks by libraries (OpenSSL, glibc); they change nothing */
	"getuid", "geteuid", "getgid", "getegid", "uname",
	/* the end */
	"exit", "exit_group",
	NULL,
};

/* Workers that open network connections (descriptor: sandbox.network): sockets are
 * limited to these families by a rule below; reading files is limited to
 * read-only opens (name resolution: /etc/hosts, /etc/resolv.conf,
 * /etc/nsswitch.conf, /etc/gai.conf, and the libnss_* modules it loads; TLS:
 * /etc/ssl/certs and openssl.cnf when no ca_file is given). */
static const char *const network[] = {
	"connect", "getsockopt", "setsockopt", "getsockname", "getpeername", "shutdown",
	/* getaddrinfo asks the kernel for the local addresses on a netlink socket */
	"bind",
	/* glibc's DNS client sends the A and AAAA queries together (a name not in
	 * /etc/hosts; the tests' "localhost" never gets this far) */
	"sendmmsg",
	/* a connected AF_UNIX pair: libcurl's threaded resolver wakes the loop
	 * with one; libmosquitto makes one in every client (mosquitto_new) */
	"socketpair",
	/* read-only opens: rule below; access() by glibc's resolver and NSS */
	"access", "faccessat", "faccessat2",
	/* listing a directory: libwebsockets reads the CA directory when a
	 * server's certificate does not verify (to say why) */
	"getdents64",
	NULL,
};

/* Threads: the sftp worker's upload thread, libcurl's threaded resolver,
 * libuv's thread pool. clone itself is allowed only with CLONE_THREAD (rule
 * below), so none of these workers can start a process. */
static const char *const threads[] = {
	"set_robust_list", "rseq", "sched_getaffinity",
	NULL,
};

/* Each protocol's own additions are in its descriptor (workers/protocols.c). */

#ifdef UCGW_SANITIZE
/* AddressSanitizer and LeakSanitizer at run time and at exit: LeakSanitizer
 * stops the threads with ptrace from a clone()d helper and reads
 * /proc/self/maps and /proc/self/task. Only in sanitizer builds, never in a
 * release build. */
static const char *const sanitizer_calls[] = {
	"clone", "ptrace", "wait4", "waitid", "prctl", "openat", "open", "readlink", "readlinkat", "getdents64",
	"getdents", /* LeakSanitizer's tracer lists /proc/PID/task with the old call: without it the
		     * tracer dies of SIGSYS and the worker spins at exit until SIGKILL */
	"getppid", "sched_getaffinity", "prlimit64", "getrlimit", "setrlimit", "dup", "dup2", "dup3", "pipe",
	"execve", "kill", "set_robust_list", "rseq", "ioctl", "access", "faccessat", "faccessat2", "sysinfo",
	NULL,
};
#endif

bool sandbox_network(const char *worker)
{
	const struct protocol *proto = protocol_find(worker);
	return proto && proto->sandbox.network;
}

/* ---- the SIGSYS report ---- */

static const char *worker_name = "worker";
static char *names[1024]; /* syscall names by number, resolved before the filter goes in */

static void put(char **p, const char *end, const char *s)
{
	while (*s && *p < end)
		*(*p)++ = *s++;
}

static void put_num(char **p, const char *end, long v)
{
	char tmp[24];
	int n = 0;
	unsigned long u = v < 0 ? (unsigned long)-v : (unsigned long)v;
	do
		tmp[n++] = (char)('0' + u % 10);
	while ((u /= 10) && n < 23);
	if (v < 0 && *p < end)
		*(*p)++ = '-';
	while (n && *p < end)
		*(*p)++ = tmp[--n];
}

/* async-signal-safe: fixed buffers, write(2), backtrace_symbols_fd. */
static void on_sigsys(int sig, siginfo_t *si, void *uc)
{
	static char buf[512]; /* static: one report per process, and the analysis of -Og is happier */
	char *p = buf;
	const char *end = buf + sizeof buf - 1;
	int nr = si->si_syscall;
	put(&p, end, "<2>ucgw-");
	put(&p, end, worker_name);
	put(&p, end, ": seccomp: forbidden system call ");
	put(&p, end, nr >= 0 && nr < (int)(sizeof names / sizeof names[0]) && names[nr] ? names[nr] : "?");
	put(&p, end, " (number ");
	put_num(&p, end, nr);
	put(&p, end, ") is not in this worker's allow-list (workers/sandbox.c, workers/protocols.c); dying of SIGSYS\n");
	if (write(2, buf, (size_t)(p - buf)) < 0) {
	}
	void *frames[64];
	int depth = backtrace(frames, 64);
	backtrace_symbols_fd(frames, depth, 2);
	signal(SIGSYS, SIG_DFL);
	raise(SIGSYS); /* delivered when the handler returns: killed by SIGSYS */
}

/* ---- building the filter ---- */

static int add(scmp_filter_ctx ctx, const char *name, char *err, size_t errlen)
{
	int nr = seccomp_syscall_resolve_name(name);
	if (nr == __NR_SCMP_ERROR)
		return 0; /* not a call on this architecture */
	int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
	if (rc < 0 && rc != -EEXIST) {
		snprintf(err, errlen, "seccomp: cannot allow %s: %s", name, strerror(-rc));
		return -1;
	}
	return 0;
}

static int add_list(scmp_filter_ctx ctx, const char *const *list, char *err, size_t errlen)
{
	for (size_t i = 0; list[i]; i++)
		if (add(ctx, list[i], err, errlen) < 0)
			return -1;
	return 0;
}

#define RULE(ctx, action, call, ...)                                                              \
	do {                                                                                      \
		int rc_ = seccomp_rule_add(ctx, action, SCMP_SYS(call), __VA_ARGS__);             \
		if (rc_ < 0 && rc_ != -EEXIST) {                                                  \
			snprintf(err, errlen, "seccomp: rule for %s: %s", #call, strerror(-rc_)); \
			return -1;                                                                \
		}                                                                                 \
	} while (0)

static int add_rules(scmp_filter_ctx ctx, const struct protocol_sandbox *pol, char *err, size_t errlen)
{
	if (add_list(ctx, common, err, errlen) < 0 || add_list(ctx, pol->calls, err, errlen) < 0)
		return -1;
	/* ioctl: only what libuv and stdio ask (non-blocking, close-on-exec, bytes
	 * waiting, "is this a terminal?"); a worker that runs programs gets it whole (its list). */
	if (!pol->exec) {
		static const unsigned long ok[] = { FIONBIO, FIOCLEX, FIONCLEX, FIONREAD, TCGETS };
		for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
			RULE(ctx, SCMP_ACT_ALLOW, ioctl, 1, SCMP_A1(SCMP_CMP_EQ, ok[i]));
		/* prlimit64 to read a limit (sysconf), never to set one */
		RULE(ctx, SCMP_ACT_ALLOW, prlimit64, 1, SCMP_A2(SCMP_CMP_EQ, 0));
	}
	if (pol->network) {
		if (add_list(ctx, network, err, errlen) < 0)
			return -1;
		/* socket: IPv4, IPv6, netlink (getaddrinfo), unix (nscd, if any) */
		static const int families[] = { AF_INET, AF_INET6, AF_NETLINK, AF_UNIX };
		for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
			RULE(ctx, SCMP_ACT_ALLOW, socket, 1, SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)families[i]));
		/* open files only to read them: not to create, write or truncate */
		RULE(ctx, SCMP_ACT_ALLOW, openat, 1,
		     SCMP_A2(SCMP_CMP_MASKED_EQ, O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND, O_RDONLY));
	}
	if (pol->threads) {
		if (add_list(ctx, threads, err, errlen) < 0)
			return -1;
		/* new threads only: clone with CLONE_THREAD, never a new process */
		RULE(ctx, SCMP_ACT_ALLOW, clone, 1, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
		/* clone3 passes its flags in memory, out of the filter's sight: refuse
		 * it with ENOSYS, so that glibc falls back to clone */
		RULE(ctx, SCMP_ACT_ERRNO(ENOSYS), clone3, 0);
	}
#ifdef UCGW_SANITIZE
	if (add_list(ctx, sanitizer_calls, err, errlen) < 0)
		return -1;
#endif
	return 0;
}

int sandbox_install(const char *worker, char *err, size_t errlen)
{
	const struct protocol *proto = protocol_find(worker);
	if (!proto) {
		snprintf(err, errlen, "seccomp: no allow-list for worker %s: no such protocol in the descriptor table "
				      "(workers/protocols.c)", worker);
		return -1;
	}
	const struct protocol_sandbox *pol = &proto->sandbox;
	worker_name = worker;
	for (int nr = 0; nr < (int)(sizeof names / sizeof names[0]); nr++)
		if (!names[nr])
			names[nr] = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
	/* backtrace() loads libgcc on first use: do it now, not in the handler */
	void *warm[1];
	backtrace(warm, 1);
	struct sigaction sa = { .sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO | SA_ONSTACK };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSYS, &sa, NULL);
	const char *permissive = getenv("UCGW_SECCOMP_PERMISSIVE");
	bool log_only = permissive && strcmp(permissive, "1") == 0;
	scmp_filter_ctx ctx = seccomp_init(log_only ? SCMP_ACT_LOG : SCMP_ACT_TRAP);
	if (!ctx) {
		snprintf(err, errlen, "seccomp_init failed");
		return -1;
	}
	int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1); /* every thread, also those already running */
	if (rc < 0)
		snprintf(err, errlen, "seccomp: thread sync: %s", strerror(-rc));
	if (rc == 0)
		rc = add_rules(ctx, pol, err, errlen);
	if (rc == 0 && (rc = seccomp_load(ctx)) < 0)
		snprintf(err, errlen, "seccomp: cannot load the filter: %s", strerror(-rc));
	seccomp_release(ctx);
	return rc < 0 ? -1 : 0;
}
