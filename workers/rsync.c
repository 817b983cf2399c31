/* ucgw-rsync: files with the rsync program over ssh. Files that queue up while
 * a run is in progress go together in the next run (--files-from), and every
 * run's ssh goes over one master connection that the worker keeps open (see
 * mux_options), so many small files share one SSH connection and a run costs
 * no login. The worker has descriptors, not paths: each run
 * gets a private directory of symlinks to /proc/self/fd/N, which rsync follows
 * (--copy-links). Partial files wait in a partial directory, never under their
 * final name, and a later run resumes from them.
 *
 * rsync prints a line per file as it starts (--out-format, with the file's
 * itemized change). A file is answered ok only when rsync proved it is on the
 * server: the whole run exited 0, or rsync said the server's copy is up to
 * date (".f" in the itemized change: same size and time under its final name,
 * where only finished files appear). After a run that failed once it had
 * started sending, a dry run asks the server which files arrived; every file
 * not proven goes back with the run's status.
 *
 * What a failure leaves on the server: rsync writes a file under a temporary
 * name beside its final one (".NAME." and six random characters); when the transfer fails, the
 * server's rsync renames what it has into the partial directory (no temporary
 * file stays; as seen with rsync 3.5 on a full disk and on a cut connection),
 * and the next run updates that partial file in place (rsync 3.2.0 and newer
 * at both ends, which --mkpath makes sure of): one copy of the data, never
 * two. Only a receiver killed outright leaves its temporary file. On a full
 * disk ("No space left on device", or a quota) that partial file holds the
 * last of the room, for the files after it as much as for itself, and would
 * stay there should the file go out another way: the worker deletes the
 * partial data of the run's files that are not proven on the server (a run of
 * its own: --delete-missing-args), and the next attempt sends them whole.
 *
 * A run that fails for good (rsync.options that this rsync or the server's
 * refuses, two rsyncs that cannot talk) fails so for every file: the worker
 * says so in its health (connected false, the reason), holds the files (retry,
 * never a dead letter: they wait in the spool or go to the next protocol of
 * their chain) and runs rsync no more, but for a check now and then (a dry run
 * of no files) that puts it back when the server's side was fixed; a reload
 * with fixed options starts a new worker.
 *
 * That output and rsync's progress are read while it runs: the progress goes to
 * the supervisor for every file in hand, so that a long run that moves keeps
 * them from gateway.job_timeout_ms. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "workers/servers.h"
#include "workers/worker.h"

/* Each file's line: "ucgw-item:<itemized change>|<name>"; '|' is never part of
 * the itemized change. */
#define ITEM_MARK "ucgw-item:"
#define PROGRESS_EVERY_MS 500 /* progress to the supervisor at most this often */
#define EOF_GRACE_MS 2000     /* after rsync exits, wait this long for the rest of its output */
#define PARTIAL_DIR ".ucgw-partial"
#define CHECK_FIRST_MS 5000   /* refused: the first check this long after, then twice as long each time */
#define CHECK_MAX_MS 300000   /* at most */

/* What the rsync in progress does. */
enum phase {
	PH_SEND,   /* sends the run's files */
	PH_VERIFY, /* after a failed send: a dry run asks the server which files it has */
	PH_CLEAN,  /* after a full disk: deletes the partial data of the files not proven */
	PH_CHECK,  /* while refused: a dry run of no files, to learn whether the options work now */
};

struct rjob {
	struct job *job;
	char name[256];
	char shown[1024];    /* the name as rsync prints it (-8: see show_name) */
	uint64_t done;       /* bytes rsync has read of it in this run */
	bool started;        /* rsync began to send it in this run */
	bool complete;       /* proven on the server under its final name */
	struct rjob *next;
};

/* Each run has its own handles: the previous run's may still be closing. */
struct run {
	uv_process_t proc;
	uv_pipe_t out, err;
	uv_pipe_t in;                      /* a spare's: the file list goes in here */
	bool has_in;
	int open;
	char dir[512];                     /* a spare's directory, until it becomes the run's */
	uint64_t born_ms;
	uv_write_t write;
	char *list;
};

struct server { /* one item of rsync.remote_host */
	char host[256];
	int port;
};

static struct {
	char *rsync, *ssh_cmd, *dest, *stage;
	/* rsync.remote_host's servers; ssh_base, ssh_cmd, host and dest are those of srv[on] */
	struct server srv[SERVERS_MAX];
	size_t on;
	char *ssh_prog, *ssh_opts, *mux, *user, *remote_path;
	uv_timer_t servers_tick;           /* failback and the per-server report */
	bool link_down;                    /* the send was cut off by the network: its server is down */
	char *ssh_base, *host, *control;   /* ssh without sharing; user@host; the master's socket (NULL: none) */
	pid_t master;                      /* the ssh master (0: none) */
	uv_timer_t master_timer;
	uint64_t master_ended_ms;
	char **options;
	size_t noptions;
	uint64_t timeout_ms;
	size_t batch_max;
	struct rjob *queue, *queue_tail;   /* waiting for the next run */
	struct rjob *running;              /* in the current run; NULL: no run */
	struct run *cur;                   /* the handles of the rsync in progress */
	struct run *spare;                 /* the next send's rsync, started and waiting for its list */
	unsigned spare_no;
	uv_timer_t timer;                  /* the run's timeout, then the grace for its output */
	unsigned run_no;
	char rundir[512];
	/* the rsync in progress */
	enum phase phase;
	bool exited, out_eof, err_eof, timed_out;
	int64_t code;
	int sig;
	char line[4096];                   /* stdout up to the next '\n' or '\r' */
	size_t linelen;
	bool line_too_long;
	char errtail[2048];
	struct rjob *sending;              /* the file rsync sends now */
	bool moved;                        /* progress since the last report */
	uint64_t reported_ms, started_ms;
	uint64_t literal, matched;         /* rsync's --stats of the send */
	unsigned deleted;                  /* PH_CLEAN: partial files it deleted */
	/* the send's outcome, kept for the dry run after it */
	enum job_status status;
	char why[2300];
	/* A run failed for good: the reason (the worker's health), and the check
	 * that may end it. Files are held meanwhile. */
	bool refused;
	char refusal[512];
	uint64_t check_every_ms, check_at_ms;
	uv_timer_t check_timer;
} rsync_state;

/* ---- programs ---- */

static char *find_program(const char *name)
{
	if (strchr(name, '/'))
		return access(name, X_OK) == 0 ? xstrdup(name) : NULL;
	const char *path = getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin";
	char *copy = xstrdup(path), *save = NULL;
	for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		char *p = xasprintf("%s/%s", d, name);
		if (access(p, X_OK) == 0) {
			free(copy);
			return p;
		}
		free(p);
	}
	free(copy);
	return NULL;
}

/* ---- a run ---- */

/* Every run's ssh goes through one master connection (ssh -M), a child of the
 * worker that lives as long as its connection: a run then costs a channel on
 * an open connection (a round trip), not a TCP connect, key exchange and login
 * (five round trips or more: half a second on a 100 ms link, for every run).
 * Runs use it with ControlMaster=no: while it is not up (starting, or gone
 * with its connection) a run's ssh connects on its own, as before. Not ssh's
 * ControlPersist, whose master leaves its parent and would outlive a worker
 * that is killed; this one dies with it (PDEATHSIG). Its socket is in the
 * staging directory, private to the worker; a path that is too long for a
 * socket or that ssh would expand (%) goes without. */
#define MASTER_RETRY_MS 5000 /* a master that ended is started again at most this often */

static char *mux_options(void)
{
	char *path = xasprintf("%s/ssh", rsync_state.stage);
	if (strlen(path) >= 100 || strpbrk(path, "% \t'\"")) {
		log_warnx("no ssh connection sharing: the staging path %s is too long or has %%, a space or a quote",
			  path);
		free(path);
		return xstrdup("");
	}
	rsync_state.control = path;
	return xasprintf(" -o ControlMaster=no -o ControlPath=%s", path);
}

/* argv of the master: the runs' ssh command up to its sharing options, then
 * -M -N; ServerAlive: a master whose link went silent ends within 15 s, and
 * the runs on it with it, instead of at rsync's --timeout. */
static char **master_argv(void)
{
	char *cmd = xstrdup(rsync_state.ssh_base), *save = NULL;
	size_t n = 0, cap = 32;
	char **argv = xcalloc(cap, sizeof *argv);
	for (char *t = strtok_r(cmd, " ", &save); t && n + 16 < cap; t = strtok_r(NULL, " ", &save))
		argv[n++] = xstrdup(t);
	free(cmd);
	const char *more[] = { "-M", "-N", "-o", "ControlPersist=no", "-o", "ServerAliveInterval=5", "-o",
			       "ServerAliveCountMax=3", "-S", rsync_state.control, rsync_state.host };
	for (size_t i = 0; i < sizeof more / sizeof more[0]; i++)
		argv[n++] = xstrdup(more[i]);
	argv[n] = NULL;
	return argv;
}

static void free_argv(char **argv)
{
	for (char **a = argv; *a; a++)
		free(*a);
	free(argv);
}

static bool master_alive(void)
{
	if (rsync_state.master > 0 && waitpid(rsync_state.master, NULL, WNOHANG) == rsync_state.master) {
		rsync_state.master = 0;
		rsync_state.master_ended_ms = now_ms();
	}
	return rsync_state.master > 0;
}

/* Started before a run when none is up (and the last did not end just now). */
static void ensure_master(void)
{
	if (!rsync_state.control || master_alive() || (rsync_state.master_ended_ms && now_ms() - rsync_state.master_ended_ms < MASTER_RETRY_MS))
		return;
	unlink(rsync_state.control); /* a dead master's socket: a new one could not take its name */
	char **argv = master_argv();
	pid_t parent = getpid(), pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(0);
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null >= 0) {
			dup2(null, 0); /* dup2 clears close-on-exec on the copies */
			dup2(null, 1);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	free_argv(argv);
	if (pid < 0)
		log_warn("cannot start the ssh master");
	else
		rsync_state.master = pid;
	rsync_state.master_ended_ms = pid < 0 ? now_ms() : 0;
}

static void start_master(uv_timer_t *t)
{
	(void)t;
	ensure_master();
}

static void stop_master(void)
{
	if (rsync_state.master <= 0)
		return;
	kill(rsync_state.master, SIGTERM);
	for (int i = 0; i < 200; i++) {
		if (waitpid(rsync_state.master, NULL, WNOHANG) == rsync_state.master)
			return;
		usleep(10000);
	}
	kill(rsync_state.master, SIGKILL);
	waitpid(rsync_state.master, NULL, 0);
}

static void start_run(void);
static void follow_server(void);
static int spawn_rsync(enum phase phase);

static void rm_rundir(void)
{
	DIR *d = opendir(rsync_state.rundir);
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
			char *p = xasprintf("%s/%s", rsync_state.rundir, e->d_name);
			unlink(p);
			free(p);
		}
	if (d)
		closedir(d);
	rmdir(rsync_state.rundir);
	/* beside it: its file list, and what a run that deletes partial data uses */
	const char *beside[] = { ".list", ".clean.list", ".clean/" PARTIAL_DIR, ".clean" };
	for (size_t i = 0; i < sizeof beside / sizeof beside[0]; i++) {
		char *p = xasprintf("%s%s", rsync_state.rundir, beside[i]);
		if (unlink(p) < 0 && errno == EISDIR)
			rmdir(p);
		free(p);
	}
}

/* rsync's exit codes (its manual's EXIT VALUES, and errcode.h for 124-127):
 * whether a later run may work, and whether the code means the link to the
 * server is down (health says so). A failure is permanent only when no later
 * run can succeed without someone changing the options or an rsync: options
 * this rsync or the server's cannot take (1, 4), two rsyncs that cannot talk
 * (2). That is no file's fault: the worker is refused (see the top), and the
 * files are held, not failed. What the server's file system says is retried,
 * since it can change on its own or by an operator's hand there, and the files
 * wait in the spool meanwhile: 11 is a full disk (ENOSPC), a read-only file
 * system under remote_path, or a path blocked by a file; 3 a destination
 * directory the server cannot enter; 23 a file it could not create. A
 * connection cut mid-run (sshd restarted or killed, the remote rsync killed)
 * ends with 255, 12 or 10, as tried against OpenSSH 9.2 and rsync 3.5. */
static const struct exit_code {
	int code;
	enum job_status status;
	bool link_down;
	const char *meaning; /* for a failure without a message */
} exit_codes[] = {
	{ 0, JOB_OK, false, "success" },
	{ 1, JOB_PERMFAIL, false, "syntax or usage error" },
	{ 2, JOB_PERMFAIL, false, "protocol incompatibility" },
	{ 3, JOB_RETRY, false, "errors selecting input/output files, dirs" },
	{ 4, JOB_PERMFAIL, false, "requested action not supported" },
	{ 5, JOB_RETRY, false, "error starting client-server protocol" },
	{ 10, JOB_RETRY, true, "error in socket I/O" },
	{ 11, JOB_RETRY, false, "error in file I/O" },
	{ 12, JOB_RETRY, true, "error in rsync protocol data stream" },
	{ 13, JOB_RETRY, false, "errors with program diagnostics" },
	{ 14, JOB_RETRY, false, "error in IPC code" },
	{ 15, JOB_RETRY, false, "sibling process crashed" },
	{ 16, JOB_RETRY, false, "sibling process terminated abnormally" },
	{ 19, JOB_RETRY, false, "received SIGUSR1" },
	{ 20, JOB_RETRY, false, "received SIGINT, SIGTERM, or SIGHUP" },
	{ 21, JOB_RETRY, false, "some error returned by waitpid()" },
	{ 22, JOB_RETRY, false, "error allocating core memory buffers" },
	{ 23, JOB_RETRY, false, "partial transfer due to error" },
	{ 24, JOB_RETRY, false, "partial transfer due to vanished source files" },
	{ 25, JOB_RETRY, false, "the --max-delete limit stopped deletions" },
	{ 30, JOB_RETRY, true, "timeout in data send/receive" },
	{ 35, JOB_RETRY, true, "timeout waiting for daemon connection" },
	{ 124, JOB_RETRY, true, "remote shell failed" },
	{ 125, JOB_RETRY, true, "remote shell killed" },
	{ 126, JOB_RETRY, false, "remote shell could not be run" },
	{ 127, JOB_RETRY, false, "remote shell not found" },
	{ 255, JOB_RETRY, true, "ssh failed or the connection was lost" },
};

static struct exit_code exit_code_of(int64_t code)
{
	for (size_t i = 0; i < sizeof exit_codes / sizeof exit_codes[0]; i++)
		if (exit_codes[i].code == code)
			return exit_codes[i];
	return (struct exit_code){ (int)code, JOB_RETRY, false, "unknown exit code" };
}

/* The server's rsync refuses our options before the two have started talking
 * ("rsync: on remote machine: --x: unknown option", then "rsync error: syntax
 * or usage error (code 1) at main.c(...) [server=3.x]" on its stderr): this
 * side only sees the connection close and exits 12, which alone would be
 * retried for ever. Its own code, when its message came through (-1 if not). */
static int server_code(const char *tail)
{
	for (const char *s = tail; (s = strstr(s, "rsync error: ")); s++) {
		const char *c = strstr(s, " (code "), *end = c ? strchr(c, ']') : NULL, *next = strstr(s + 1, "rsync error: ");
		if (!c || !end || (next && next < end))
			continue;
		const char *srv = strstr(c, "[server=");
		if (srv && srv < end)
			return atoi(c + 7);
	}
	return -1;
}

/* A name as rsync prints it with -8 (--8-bit-output): control characters but
 * the tab, and a backslash that starts "\#" and three digits, become \#ooo. */
static void show_name(const char *name, char *out, size_t outlen)
{
	size_t o = 0;
	for (const unsigned char *s = (const unsigned char *)name; *s && o + 5 < outlen; s++) {
		if ((*s < ' ' && *s != '\t') ||
		    (s[0] == '\\' && s[1] == '#' && isdigit(s[2]) && isdigit(s[3]) && isdigit(s[4])))
			o += (size_t)snprintf(out + o, outlen - o, "\\#%03o", *s);
		else
			out[o++] = (char)*s;
	}
	out[o] = '\0';
}

static struct rjob *running_job(const char *shown)
{
	for (struct rjob *r = rsync_state.running; r; r = r->next)
		if (strcmp(r->shown, shown) == 0)
			return r;
	return NULL;
}

/* Every file in hand, each with what rsync has read of it, while the run moves:
 * the files after the one it sends now, and those waiting for the next run,
 * wait for this run only, and a job timeout would only have the supervisor
 * hand them out a second time while this worker still sends them. A run that
 * stops moving reports nothing, and its jobs time out. */
static void report_progress(void)
{
	uint64_t now = now_ms();
	if (!rsync_state.moved || now - rsync_state.reported_ms < PROGRESS_EVERY_MS)
		return;
	rsync_state.moved = false;
	rsync_state.reported_ms = now;
	for (struct rjob *r = rsync_state.running; r; r = r->next)
		worker_progress(r->job, r->done);
	for (struct rjob *r = rsync_state.queue; r; r = r->next)
		worker_progress(r->job, 0);
}

/* A number as rsync prints it (commas between thousands unless --no-h); *s
 * moves past it. */
static uint64_t number(const char **s)
{
	uint64_t n = 0;
	for (; isdigit((unsigned char)**s) || **s == ','; ++*s)
		if (**s != ',')
			n = n * 10 + (uint64_t)(**s - '0');
	return n;
}

/* "        1234567  12%  ..." (--info=progress1): the bytes of the file read so far */
static bool progress_bytes(const char *s, uint64_t *bytes)
{
	while (*s == ' ')
		s++;
	if (!isdigit((unsigned char)*s))
		return false;
	uint64_t n = number(&s);
	if (*s != ' ')
		return false;
	while (*s == ' ')
		s++;
	while (isdigit((unsigned char)*s))
		s++;
	if (*s != '%')
		return false;
	*bytes = n;
	return true;
}

static void item_line(const char *item, size_t itemlen, const char *shown)
{
	if (rsync_state.phase == PH_CLEAN) {
		if (itemlen >= 9 && strncmp(item, "*deleting", 9) == 0)
			rsync_state.deleted++;
		return;
	}
	struct rjob *r = running_job(shown);
	if (!r || itemlen < 2 || rsync_state.phase == PH_CHECK)
		return; /* a directory, or a name the worker did not send */
	bool verifying = rsync_state.phase == PH_VERIFY;
	if (!verifying)
		rsync_state.moved = true;
	if (item[0] == '.' && item[1] == 'f') {
		/* the server's file has this one's size and time under its final name */
		r->complete = true;
	} else if (item[0] == '<' && !verifying) {
		if (rsync_state.sending && rsync_state.sending != r)
			rsync_state.sending->done = rsync_state.sending->job->size; /* rsync has read all of it */
		rsync_state.sending = r;
		r->started = true;
		r->done = 0;
	}
}

static void parse_line(char *line)
{
	uint64_t n;
	if (strncmp(line, ITEM_MARK, strlen(ITEM_MARK)) == 0) {
		char *item = line + strlen(ITEM_MARK), *bar = strchr(item, '|');
		if (bar)
			item_line(item, (size_t)(bar - item), bar + 1);
	} else if (strncmp(line, "Total bytes sent: ", 18) == 0 || strncmp(line, "Total bytes received: ", 22) == 0) {
		/* every run's (--info=stats2): the bytes of rsync's protocol through
		 * ssh, for the link's byte budget; ssh's own framing and the master
		 * connection's key exchange and keepalives are not in it */
		const char *p = strchr(line, ':') + 2;
		worker_wire_add(number(&p));
	} else if (rsync_state.phase != PH_SEND) {
		return;
	} else if (progress_bytes(line, &n)) {
		if (rsync_state.sending) {
			rsync_state.sending->done = n < rsync_state.sending->job->size ? n : rsync_state.sending->job->size;
			rsync_state.moved = true;
		}
	} else if (strncmp(line, "Literal data: ", 14) == 0) {
		const char *p = line + 14;
		rsync_state.literal = number(&p);
	} else if (strncmp(line, "Matched data: ", 14) == 0) {
		const char *p = line + 14;
		rsync_state.matched = number(&p);
	}
}

static void run_closed(uv_handle_t *h)
{
	struct run *run = h->data;
	if (--run->open == 0)
		free(run);
}

static void close_run_handle(uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, run_closed);
}

/* ---- the end of a run ---- */

/* The end of a run that did not exit 0: rsync's last words on one line, and
 * what its exit means for the files (a kill or a timeout: retry). */
static struct exit_code failed_run(void)
{
	size_t tl = strlen(rsync_state.errtail);
	while (tl && rsync_state.errtail[tl - 1] == ' ')
		rsync_state.errtail[--tl] = '\0';
	struct exit_code ec = exit_code_of(rsync_state.code);
	if (rsync_state.code == 12) {
		const struct exit_code srv = exit_code_of(server_code(rsync_state.errtail));
		if (srv.status == JOB_PERMFAIL) { /* the link works; the server said no */
			ec.status = JOB_PERMFAIL;
			ec.link_down = false;
		}
	}
	if (rsync_state.sig || rsync_state.timed_out) {
		ec.status = JOB_RETRY;
		ec.link_down = rsync_state.timed_out;
	}
	return ec;
}

/* The worker's health once a run failed for good: rsync's first message (the
 * server's, when it came from there) and what to do, such as "the server's
 * rsync refused an option: --no-such-option: unknown option (rsync exit 12);
 * ...". */
static void set_refusal(void)
{
	static const char remote_mark[] = "on remote machine: ";
	const char *from = strstr(rsync_state.errtail, remote_mark);
	bool remote = from || (rsync_state.code == 12 && server_code(rsync_state.errtail) >= 0);
	if (from)
		from += strlen(remote_mark);
	else
		from = strncmp(rsync_state.errtail, "rsync: ", 7) == 0 ? rsync_state.errtail + 7 : rsync_state.errtail;
	size_t len = strlen(from);
	const char *end = strstr(from, " rsync error: "), *next = strstr(from, " rsync: ");
	if (next && (!end || next < end))
		end = next;
	if (end)
		len = (size_t)(end - from);
	int code = rsync_state.code == 12 && server_code(rsync_state.errtail) >= 0 ? server_code(rsync_state.errtail) : (int)rsync_state.code;
	const char *what = code == 1 ? "refused an option" : code == 2 ? "cannot talk to the other rsync" :
			   code == 4 ? "does not support what the options ask" : "cannot work with these options";
	if (!len) {
		from = exit_code_of(code).meaning;
		len = strlen(from);
	}
	char before[sizeof rsync_state.refusal];
	snprintf(before, sizeof before, "%s", rsync_state.refusal);
	snprintf(rsync_state.refusal, sizeof rsync_state.refusal, "%s %s: %.*s (rsync exit %lld); files wait until rsync.options is "
		 "fixed and reloaded, or a check passes", remote ? "the server's rsync" : "this rsync", what,
		 (int)(len > 120 ? 120 : len), from, (long long)rsync_state.code);
	worker_health(false, 0, "%s", rsync_state.refusal);
	if (strcmp(before, rsync_state.refusal) != 0)
		log_warnx("%s", rsync_state.refusal);
}

static void on_check_timer(uv_timer_t *t);

static void arm_check(void)
{
	rsync_state.check_at_ms = now_ms() + rsync_state.check_every_ms;
	uv_timer_start(&rsync_state.check_timer, on_check_timer, rsync_state.check_every_ms, 0);
}

/* A run failed for good: not one file can go until something changes. The
 * reason (rsync_state.refusal) was taken from that run's own output when it ended, since
 * the dry run that may follow it overwrites rsync_state.code and rsync_state.errtail. */
static void drop_spare(void);

static void refuse(void)
{
	drop_spare(); /* it has the options that were refused */
	if (!rsync_state.refused)
		rsync_state.check_every_ms = CHECK_FIRST_MS;
	rsync_state.refused = true;
	arm_check();
}

/* While refused, each file goes back at once (its message waits until the
 * next check, unless the supervisor has another way for it). */
static void hold(struct job *j)
{
	uint64_t now = now_ms();
	worker_result(j, JOB_RETRY, rsync_state.check_at_ms > now ? rsync_state.check_at_ms - now : 0, "not sent: %s", rsync_state.refusal);
}

static void finish_batch(void)
{
	size_t n = 0, ok = 0;
	bool refused = rsync_state.status == JOB_PERMFAIL;
	if (refused) /* before the results: the supervisor knows that rsync is down when they come */
		refuse();
	rsync_state.sending = NULL;
	while (rsync_state.running) {
		struct rjob *r = rsync_state.running;
		rsync_state.running = r->next;
		n++;
		if (rsync_state.status == JOB_OK || r->complete) {
			ok++;
			servers_delivered(rsync_state.on, 0);
			worker_progress(r->job, r->job->size);
			worker_result(r->job, JOB_OK, 0, NULL);
		} else {
			servers_failed(rsync_state.on);
			/* a refusal: held, not a permanent failure of this file (it is the options') */
			worker_result(r->job, refused ? JOB_RETRY : rsync_state.status, refused ? rsync_state.check_every_ms : 0, "%s", rsync_state.why);
		}
		free(r);
	}
	if (rsync_state.link_down) /* after the files proven there were counted, which says up */
		servers_down(rsync_state.on, rsync_state.why);
	rsync_state.link_down = false;
	if (rsync_state.status != JOB_OK)
		log_info("run %u: %s; %zu of %zu files proven on the server, the others go back (%s)", rsync_state.run_no,
			 rsync_state.why, ok, n, refused ? "held: the options are refused" : "retry");
	rm_rundir();
	if (rsync_state.queue)
		start_run();
}

static bool disk_full(const char *why)
{
	return strstr(why, "No space left on device") || strcasestr(why, "quota exceeded");
}

/* The files of a run that ended in a full disk: delete whatever partial data
 * of theirs the server keeps (the file that filled the disk has some), a
 * missing source file being a deletion at the server (--delete-missing-args).
 * The source is an empty directory but for an empty PARTIAL_DIR, so that
 * rsync needs to send no directory of its own (--no-implied-dirs). 0 when
 * the rsync that deletes them runs. */
static int spawn_clean(void)
{
	char *dir = xasprintf("%s.clean", rsync_state.rundir), *sub = xasprintf("%s/" PARTIAL_DIR, dir);
	char *listpath = xasprintf("%s.clean.list", rsync_state.rundir);
	FILE *list = NULL;
	size_t n = 0;
	if ((mkdir(dir, 0700) == 0 || errno == EEXIST) && (mkdir(sub, 0700) == 0 || errno == EEXIST))
		list = fopen(listpath, "w");
	for (struct rjob *r = rsync_state.running; list && r; r = r->next)
		if (!r->complete) {
			fprintf(list, PARTIAL_DIR "/%s%c", r->name, '\0');
			n++;
		}
	bool written = list && fclose(list) == 0;
	free(dir);
	free(sub);
	free(listpath);
	rsync_state.deleted = 0;
	if (!written || !n)
		return -1;
	return spawn_rsync(PH_CLEAN);
}

/* After a failed send (and the dry run that asked the server about it). */
static void send_failed_end(void)
{
	if (disk_full(rsync_state.why) && spawn_clean() == 0)
		return;
	finish_batch();
}

static void send_ended(void)
{
	size_t n = 0, in_doubt = 0; /* files rsync began to send that are not proven on the server */
	for (struct rjob *r = rsync_state.running; r; r = r->next) {
		n++;
		in_doubt += r->started && !r->complete;
	}
	double secs = (double)(now_ms() - rsync_state.started_ms) / 1000.0;
	if (!rsync_state.sig && !rsync_state.timed_out && rsync_state.code == 0) {
		log_debug("run %u: %zu files in %.1f s, exit 0; %llu bytes of file data sent, %llu matched at the server "
			  "(resumed or unchanged)", rsync_state.run_no, n, secs, (unsigned long long)rsync_state.literal,
			  (unsigned long long)rsync_state.matched);
		rsync_state.status = JOB_OK;
		worker_health(true, 0, "rsync to %s works", rsync_state.dest);
		finish_batch();
		return;
	}
	struct exit_code ec = failed_run();
	if (rsync_state.timed_out)
		snprintf(rsync_state.why, sizeof rsync_state.why, "rsync run timed out after %llu ms", (unsigned long long)rsync_state.timeout_ms);
	else if (rsync_state.sig)
		snprintf(rsync_state.why, sizeof rsync_state.why, "rsync killed by signal %d: %s", rsync_state.sig,
			 rsync_state.errtail[0] ? rsync_state.errtail : "no message");
	else if (rsync_state.errtail[0])
		snprintf(rsync_state.why, sizeof rsync_state.why, "rsync exit %lld: %s", (long long)rsync_state.code, rsync_state.errtail);
	else /* the server's message can be lost: sshd may pass on the end of rsync's output before its stderr */
		snprintf(rsync_state.why, sizeof rsync_state.why, "rsync exit %lld (%s), no message from rsync or ssh", (long long)rsync_state.code,
			 ec.meaning);
	rsync_state.status = ec.status;
	if (ec.link_down) {
		/* the next run goes to the next server (failover); the spare
		 * waits on this one */
		rsync_state.link_down = true; /* servers_down once its files are counted */
		drop_spare();
		worker_health(false, 0, "%s", rsync_state.why);
	}
	if (ec.status == JOB_PERMFAIL)
		set_refusal(); /* from this run's words, before a dry run replaces them */
	/* Files rsync began to send may have arrived before the failure: ask the
	 * server (a dry run: it lists each file's itemized change, ".f" when the
	 * server has it). A file that never started cannot have arrived in this run. */
	if (in_doubt && spawn_rsync(PH_VERIFY) == 0)
		return;
	send_failed_end();
}

static void clean_ended(void)
{
	char names[600] = "";
	size_t o = 0, n = 0;
	for (struct rjob *r = rsync_state.running; r; r = r->next)
		if (!r->complete) {
			n++;
			if (o < sizeof names)
				o += (size_t)snprintf(names + o, sizeof names - o, "%s%s", o ? ", " : "", r->shown);
		}
	if (!rsync_state.sig && !rsync_state.timed_out && rsync_state.code == 0)
		log_info("run %u: the server's disk is full: deleted the partial data of %u of these %zu files, so "
			 "that it holds no room (they go whole next time): %s", rsync_state.run_no, rsync_state.deleted, n, names);
	else
		log_warnx("run %u: the server's disk is full, and the partial data of %s could not be deleted: "
			  "%s %lld: %s", rsync_state.run_no, names, rsync_state.sig ? "signal" : "rsync exit",
			  rsync_state.sig ? (long long)rsync_state.sig : (long long)rsync_state.code, rsync_state.errtail[0] ? rsync_state.errtail : "no message");
	finish_batch();
}

static void check_ended(void)
{
	if (!rsync_state.sig && !rsync_state.timed_out && rsync_state.code == 0) {
		rsync_state.refused = false;
		rsync_state.refusal[0] = '\0';
		uv_timer_stop(&rsync_state.check_timer);
		log_info("run %u: check: rsync to %s takes rsync.options now; files go out again", rsync_state.run_no, rsync_state.dest);
		worker_health(true, 0, "rsync to %s works (a check passed)", rsync_state.dest);
	} else {
		struct exit_code ec = failed_run();
		if (ec.status == JOB_PERMFAIL)
			set_refusal(); /* the reason may have changed */
		rsync_state.check_every_ms = rsync_state.check_every_ms * 2 < CHECK_MAX_MS ? rsync_state.check_every_ms * 2 : CHECK_MAX_MS;
		log_info("run %u: check: %s %lld: %s; the next in %llu s", rsync_state.run_no, rsync_state.sig ? "signal" : "rsync exit",
			 rsync_state.sig ? (long long)rsync_state.sig : (long long)rsync_state.code, rsync_state.errtail[0] ? rsync_state.errtail : ec.meaning,
			 (unsigned long long)(rsync_state.check_every_ms / 1000));
		arm_check();
	}
	rm_rundir();
}

static void run_ended(void)
{
	uv_timer_stop(&rsync_state.timer);
	if (rsync_state.cur) {
		close_run_handle((uv_handle_t *)&rsync_state.cur->out);
		close_run_handle((uv_handle_t *)&rsync_state.cur->err);
		rsync_state.cur = NULL;
	}
	rsync_state.linelen = 0; /* an unfinished last line says nothing */
	switch (rsync_state.phase) {
	case PH_SEND:
		send_ended();
		break;
	case PH_VERIFY:
		if (rsync_state.sig || rsync_state.timed_out || rsync_state.code != 0)
			log_debug("run %u: the dry run after the failure ended with %s %lld", rsync_state.run_no,
				  rsync_state.sig ? "signal" : "exit", rsync_state.sig ? (long long)rsync_state.sig : (long long)rsync_state.code);
		send_failed_end();
		break;
	case PH_CLEAN:
		clean_ended();
		break;
	case PH_CHECK:
		check_ended();
		break;
	}
}

static void maybe_end(void)
{
	if (rsync_state.exited && rsync_state.out_eof && rsync_state.err_eof)
		run_ended();
}

/* rsync has exited but its output is still open: ssh, its child, holds stderr
 * while it winds down. Do not wait for it. */
static void on_grace(uv_timer_t *t)
{
	rsync_state.out_eof = rsync_state.err_eof = true;
	run_ended();
}

static void spare_exited(struct run *run);

static void on_exit_run(uv_process_t *p, int64_t code, int sig)
{
	if (p->data != rsync_state.cur) {
		spare_exited(p->data);
		return;
	}
	close_run_handle((uv_handle_t *)p);
	rsync_state.exited = true;
	rsync_state.code = code;
	rsync_state.sig = sig;
	uv_timer_stop(&rsync_state.timer);
	if (!rsync_state.out_eof || !rsync_state.err_eof)
		uv_timer_start(&rsync_state.timer, on_grace, EOF_GRACE_MS, 0);
	maybe_end();
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char scratch[4096];
	buf->base = scratch;
	buf->len = sizeof scratch;
}

static void on_out(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	if (n < 0) {
		close_run_handle((uv_handle_t *)s);
		rsync_state.out_eof = true;
		maybe_end();
		return;
	}
	for (ssize_t i = 0; i < n; i++) {
		char c = buf->base[i];
		if (c == '\n' || c == '\r') {
			rsync_state.line[rsync_state.linelen] = '\0';
			if (!rsync_state.line_too_long)
				parse_line(rsync_state.line);
			rsync_state.linelen = 0;
			rsync_state.line_too_long = false;
		} else if (rsync_state.linelen < sizeof rsync_state.line - 1) {
			rsync_state.line[rsync_state.linelen++] = c;
		} else {
			rsync_state.line_too_long = true;
		}
	}
	report_progress();
}

static void on_err(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	if (n > 0) {
		/* keep the last line or two: rsync ends with the reason */
		size_t len = strlen(rsync_state.errtail), add = (size_t)n;
		if (len + add >= sizeof rsync_state.errtail) {
			size_t drop = len + add - sizeof rsync_state.errtail + 1;
			if (drop > len)
				drop = len;
			memmove(rsync_state.errtail, rsync_state.errtail + drop, len - drop + 1);
			len -= drop;
		}
		size_t take = add < sizeof rsync_state.errtail - 1 - len ? add : sizeof rsync_state.errtail - 1 - len;
		memcpy(rsync_state.errtail + len, buf->base + (add - take), take);
		rsync_state.errtail[len + take] = '\0';
		/* one line: line ends (ssh writes "\r\n") and runs of blanks become one space */
		char *w = rsync_state.errtail;
		for (const char *c = rsync_state.errtail; *c; c++) {
			char ch = isspace((unsigned char)*c) ? ' ' : *c;
			if (ch != ' ' || (w > rsync_state.errtail && w[-1] != ' '))
				*w++ = ch;
		}
		*w = '\0';
	} else if (n < 0) {
		close_run_handle((uv_handle_t *)s);
		rsync_state.err_eof = true;
		maybe_end();
	}
}

static void on_timeout(uv_timer_t *t)
{
	rsync_state.timed_out = true;
	if (rsync_state.cur)
		uv_process_kill(&rsync_state.cur->proc, SIGKILL);
}

/* Reopening /proc/PID/fd/N checks the file's permissions again: a worker
 * running as security.worker_user holds descriptors of files it may not open
 * (the caller's file, hard-linked into the spool, mode 0600 say). Those are
 * copied into the run's directory (which the worker owns) instead of linked. */
static int stage_one(const char *target, const char *link, int fd)
{
	if (access(target, R_OK) == 0)
		return symlink(target, link);
	int out = open(link, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0)
		return -1;
	off_t off = 0;
	for (;;) {
		ssize_t n = sendfile(out, fd, &off, 1 << 30);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = errno;
			close(out);
			if (n < 0)
				unlink(link);
			errno = e;
			return n < 0 ? -1 : 0;
		}
	}
}

/* Symlink each job's descriptor into this run's directory under its remote
 * name; the list for --files-from separates names with NUL (--from0), so any
 * name goes through whole. */
static int stage_batch(FILE *list)
{
	size_t n = 0;
	struct rjob **tail = &rsync_state.running;
	while (rsync_state.queue && n < rsync_state.batch_max) {
		struct rjob *r = rsync_state.queue;
		bool dup = false;
		for (struct rjob *o = rsync_state.running; o; o = o->next)
			dup |= strcmp(o->name, r->name) == 0;
		if (dup)
			break; /* the same name twice goes in the next run */
		rsync_state.queue = r->next;
		if (!rsync_state.queue)
			rsync_state.queue_tail = NULL;
		char target[64], *link = xasprintf("%s/%s", rsync_state.rundir, r->name);
		snprintf(target, sizeof target, "/proc/%d/fd/%d", (int)getpid(), r->job->fd);
		if (stage_one(target, link, r->job->fd) < 0) {
			worker_result(r->job, JOB_RETRY, 0, "cannot stage the file: %s", strerror(errno));
			free(r);
		} else {
			fwrite(r->name, 1, strlen(r->name) + 1, list);
			r->done = 0;
			r->started = r->complete = false;
			r->next = NULL;
			*tail = r;
			tail = &r->next;
			n++;
		}
		free(link);
	}
	return (int)n;
}

/* rsync over a run's list in dir: the send, the dry run after it that only
 * asks the server which files it has, the deletion of partial data after a
 * full disk, or the check while refused (a dry run of an empty list: the
 * server's rsync still starts with every option). The list is dir's ".list"
 * file, or comes on stdin (a spare). Its handles, or NULL with libuv's error
 * in *rc. */
static struct run *start_rsync(enum phase phase, const char *dir, bool list_on_stdin, int *rc)
{
	ensure_master();
	bool clean = phase == PH_CLEAN;
	char *files_from = list_on_stdin ? xstrdup("--files-from=-")
					 : xasprintf("--files-from=%s%s", dir, clean ? ".clean.list" : ".list");
	char *timeout = xasprintf("--timeout=%llu", (unsigned long long)(rsync_state.timeout_ms / 1000 + 1));
	char *src = xasprintf("%s%s", dir, clean ? ".clean/" : "/");
	const char *sending[] = {
		"--copy-links", "--mkpath", "--partial-dir=" PARTIAL_DIR,
		/* what the worker reads: a line per file as it starts or is found up to
		 * date (name2), the progress of each, the data sent and matched */
		"--out-format=" ITEM_MARK "%i|%n", "--info=name2,progress1,stats2",
		"-8", "--no-human-readable", /* names with control bytes escaped only; plain numbers */
		"--from0", files_from, timeout, phase == PH_SEND ? NULL : "--dry-run",
	};
	const char *deleting[] = {
		/* each name listed is missing here, so deleted there; no directory is
		 * sent, none deleted (a directory that is not empty never is), none
		 * backed up */
		"--delete-missing-args", "--no-implied-dirs", "--no-backup",
		"--out-format=" ITEM_MARK "%i|%n", "-8", "--from0", files_from, timeout,
	};
	const char **fixed = clean ? deleting : sending;
	size_t nfixed = clean ? sizeof deleting / sizeof deleting[0] : sizeof sending / sizeof sending[0];
	const char **argv = xcalloc(rsync_state.noptions + nfixed + 6, sizeof *argv);
	size_t a = 0;
	argv[a++] = rsync_state.rsync;
	for (size_t i = 0; i < rsync_state.noptions; i++)
		argv[a++] = rsync_state.options[i];
	for (size_t i = 0; i < nfixed; i++)
		if (fixed[i])
			argv[a++] = fixed[i];
	argv[a++] = "-e";
	argv[a++] = rsync_state.ssh_cmd;
	argv[a++] = src;
	argv[a++] = rsync_state.dest;
	argv[a] = NULL;
	struct run *run = xcalloc(1, sizeof *run);
	uv_pipe_init(worker_loop(), &run->out, 0);
	uv_pipe_init(worker_loop(), &run->err, 0);
	uv_pipe_init(worker_loop(), &run->in, 0);
	run->out.data = run->err.data = run->in.data = run->proc.data = run;
	run->open = 4;
	run->has_in = list_on_stdin;
	uv_stdio_container_t io[3] = {
		{ .flags = list_on_stdin ? UV_CREATE_PIPE | UV_READABLE_PIPE : UV_IGNORE,
		  .data.stream = (uv_stream_t *)&run->in },
		{ .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&run->out },
		{ .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&run->err },
	};
	uv_process_options_t po = { .exit_cb = on_exit_run, .file = rsync_state.rsync, .args = (char **)argv,
				    .stdio_count = 3, .stdio = io };
	*rc = uv_spawn(worker_loop(), &run->proc, &po);
	free(argv);
	free(files_from);
	free(timeout);
	free(src);
	if (!list_on_stdin || *rc < 0)
		close_run_handle((uv_handle_t *)&run->in);
	if (*rc < 0) {
		log_warnx("cannot run %s: %s", rsync_state.rsync, uv_strerror(*rc));
		close_run_handle((uv_handle_t *)&run->proc);
		close_run_handle((uv_handle_t *)&run->out);
		close_run_handle((uv_handle_t *)&run->err);
		return NULL;
	}
	return run;
}

/* run is now the rsync in progress: its output is read from here on. */
static void begin_run(struct run *run, enum phase phase)
{
	rsync_state.phase = phase;
	rsync_state.exited = rsync_state.out_eof = rsync_state.err_eof = rsync_state.timed_out = false;
	rsync_state.code = 0;
	rsync_state.sig = 0;
	rsync_state.linelen = 0;
	rsync_state.line_too_long = false;
	rsync_state.moved = false;
	rsync_state.errtail[0] = '\0'; /* a send's reason is in rsync_state.why by the time another rsync runs */
	if (phase == PH_SEND) {
		rsync_state.sending = NULL;
		rsync_state.reported_ms = 0;
		rsync_state.started_ms = now_ms();
		rsync_state.literal = rsync_state.matched = 0;
	}
	rsync_state.cur = run;
	uv_read_start((uv_stream_t *)&run->out, on_alloc, on_out);
	uv_read_start((uv_stream_t *)&run->err, on_alloc, on_err);
	uv_timer_start(&rsync_state.timer, on_timeout, rsync_state.timeout_ms, 0);
}

/* 0, or libuv's error when rsync could not be started. */
static int spawn_rsync(enum phase phase)
{
	int rc;
	struct run *run = start_rsync(phase, rsync_state.rundir, false, &rc);
	if (run)
		begin_run(run, phase);
	return run ? 0 : rc;
}

/* ---- the next send, prepared while this one runs ----
 *
 * Once a send has started, the next send's rsync is started too, with its
 * list to come on stdin (--files-from=-): it opens its channel, starts the
 * server's rsync and agrees on the protocol (a few round trips: half a second
 * at 100 ms, 1.5 s at 300 ms) while the current one still sends, then waits
 * for its list. When the current send ends, the files queued meanwhile are
 * staged in its directory and their names written to it, and it goes at once.
 * A spare older than half of rsync.timeout is not used (the server's rsync
 * gives up waiting at the timeout); one that ended is not either. */

static void rm_dir_of(struct run *run)
{
	if (run->dir[0])
		rmdir(run->dir); /* empty: staging happens only once it is the run's */
	run->dir[0] = '\0';
}

static void drop_spare(void)
{
	struct run *run = rsync_state.spare;
	if (!run)
		return;
	rsync_state.spare = NULL;
	if (!uv_is_closing((uv_handle_t *)&run->proc))
		uv_process_kill(&run->proc, SIGTERM); /* its exit closes the rest */
	rm_dir_of(run);
}

/* A spare's rsync ended before it was used, or after it was dropped. */
static void spare_exited(struct run *run)
{
	if (rsync_state.spare == run)
		rsync_state.spare = NULL;
	rm_dir_of(run);
	close_run_handle((uv_handle_t *)&run->proc);
	close_run_handle((uv_handle_t *)&run->out);
	close_run_handle((uv_handle_t *)&run->err);
	close_run_handle((uv_handle_t *)&run->in);
}

static void prepare_spare(void)
{
	if (rsync_state.spare || rsync_state.refused)
		return;
	char dir[512];
	snprintf(dir, sizeof dir, "%s/next%u", rsync_state.stage, ++rsync_state.spare_no);
	if (mkdir(dir, 0700) < 0)
		return; /* the next run goes without */
	int rc;
	struct run *run = start_rsync(PH_SEND, dir, true, &rc);
	if (!run) {
		rmdir(dir);
		return;
	}
	snprintf(run->dir, sizeof run->dir, "%s", dir);
	run->born_ms = now_ms();
	rsync_state.spare = run;
}

/* The spare, if it can take the next send: its directory becomes the run's. */
static struct run *take_spare(void)
{
	struct run *run = rsync_state.spare;
	if (!run)
		return NULL;
	if (now_ms() - run->born_ms > rsync_state.timeout_ms / 2) {
		drop_spare();
		return NULL;
	}
	rsync_state.spare = NULL;
	return run;
}

static void list_written(uv_write_t *w, int status)
{
	struct run *run = w->data;
	free(run->list);
	run->list = NULL;
	close_run_handle((uv_handle_t *)&run->in); /* EOF: the list is complete */
}

/* The run's list (its ".list" file, kept for a dry run after a failure) into
 * the spare's stdin. A spare that died meanwhile fails the run as any rsync
 * that cannot reach the server does. */
static void feed_list(struct run *run)
{
	char *path = xasprintf("%s.list", rsync_state.rundir);
	FILE *f = fopen(path, "r");
	free(path);
	size_t cap = 4096, len = 0;
	run->list = xmalloc(cap);
	for (size_t n; f && (n = fread(run->list + len, 1, cap - len, f)) > 0;) {
		len += n;
		if (len == cap)
			run->list = xrealloc(run->list, cap *= 2);
	}
	if (f)
		fclose(f);
	uv_buf_t buf = uv_buf_init(run->list, (unsigned)len);
	run->write.data = run;
	if (uv_write(&run->write, (uv_stream_t *)&run->in, &buf, 1, list_written) < 0) {
		free(run->list);
		run->list = NULL;
		close_run_handle((uv_handle_t *)&run->in);
	}
}

/* The run's directory. The staging directory above it can go while the worker
 * runs (a cleaner of old files in /tmp removes an idle worker's): made again. */
static int make_rundir(void)
{
	if (mkdir(rsync_state.rundir, 0700) == 0)
		return 0;
	if (errno != ENOENT || mkdir(rsync_state.stage, 0700) < 0 || mkdir(rsync_state.rundir, 0700) < 0)
		return -1;
	log_warnx("the staging directory %s had gone; made again", rsync_state.stage);
	return 0;
}

/* The next run: its number, its staging directory, and its file list opened
 * for writing; NULL with errno. */
static FILE *open_run(void)
{
	snprintf(rsync_state.rundir, sizeof rsync_state.rundir, "%s/run%u", rsync_state.stage, ++rsync_state.run_no);
	char *listpath = xasprintf("%s.list", rsync_state.rundir);
	FILE *list = make_rundir() == 0 ? fopen(listpath, "w") : NULL;
	free(listpath);
	return list;
}

/* While refused: the check, when no rsync runs. */
static void on_check_timer(uv_timer_t *t)
{
	if (rsync_state.cur || rsync_state.running || !rsync_state.refused) {
		if (rsync_state.refused)
			uv_timer_start(&rsync_state.check_timer, on_check_timer, 1000, 0);
		return;
	}
	follow_server();
	FILE *list = open_run(); /* left empty */
	bool made = list && fclose(list) == 0;
	int rc = made ? spawn_rsync(PH_CHECK) : 0;
	if (!made || rc < 0) {
		log_warnx("run %u: cannot start the check: %s", rsync_state.run_no, made ? uv_strerror(rc) : strerror(errno));
		rm_rundir();
		arm_check();
	}
}

/* Every file waiting goes back, since none would be answered otherwise:
 * held while refused, else retried with rsync_state.why (the supervisor hands each out
 * again after its backoff). */
static void return_queue(void)
{
	while (rsync_state.queue) {
		struct rjob *r = rsync_state.queue;
		rsync_state.queue = r->next;
		if (rsync_state.refused)
			hold(r->job);
		else
			worker_result(r->job, JOB_RETRY, 0, "%s", rsync_state.why);
		free(r);
	}
	rsync_state.queue_tail = NULL;
}

/* The spare's directory as the next run's, and its list file opened for
 * writing; NULL (the spare given up) when that cannot be. */
static FILE *open_spare_run(struct run *spare)
{
	snprintf(rsync_state.rundir, sizeof rsync_state.rundir, "%s", spare->dir);
	spare->dir[0] = '\0'; /* the run's now: rm_rundir removes it */
	rsync_state.run_no++;
	char *listpath = xasprintf("%s.list", rsync_state.rundir);
	FILE *list = fopen(listpath, "w");
	free(listpath);
	if (!list) {
		rmdir(rsync_state.rundir);
		rsync_state.spare = spare;
		drop_spare();
	}
	return list;
}

/* ssh and rsync's destination for server i of rsync.remote_host. */
static void use_server(size_t i)
{
	const struct server *sv = &rsync_state.srv[i];
	free(rsync_state.ssh_base);
	free(rsync_state.ssh_cmd);
	free(rsync_state.host);
	free(rsync_state.dest);
	rsync_state.on = i;
	rsync_state.ssh_base = xasprintf("%s -p %d%s", rsync_state.ssh_prog, sv->port, rsync_state.ssh_opts);
	rsync_state.ssh_cmd = xasprintf("%s%s", rsync_state.ssh_base, rsync_state.mux);
	rsync_state.host = xasprintf("%s@%s", rsync_state.user, sv->host);
	bool v6 = strchr(sv->host, ':') != NULL; /* rsync takes [v6addr] in its destination */
	rsync_state.dest = xasprintf("%s@%s%s%s:%s/", rsync_state.user, v6 ? "[" : "", sv->host, v6 ? "]" : "",
				     rsync_state.remote_path);
}

/* Before a run: when the server to use is no longer the one the spare and the
 * ssh master were made for (failover, failback), leave those and move. */
static void follow_server(void)
{
	size_t want = servers_pick();
	if (want == rsync_state.on)
		return;
	drop_spare();
	stop_master();
	rsync_state.master = 0;
	rsync_state.master_ended_ms = 0;
	use_server(want);
	log_info("rsync goes to server %zu of %zu now: %s", want + 1, servers_count(), rsync_state.dest);
}

static void on_servers_tick(uv_timer_t *t)
{
	(void)t;
	if (servers_failback_due()) {
		servers_failback();
		if (!rsync_state.running && !rsync_state.cur)
			follow_server();
	}
	servers_report(false);
}

static void start_run(void)
{
	follow_server();
	if (rsync_state.refused) {
		drop_spare();
		return_queue();
		return;
	}
	struct run *spare = take_spare();
	FILE *list = spare ? open_spare_run(spare) : NULL;
	if (!list) {
		spare = NULL;
		list = open_run();
	}
	if (!list) {
		snprintf(rsync_state.why, sizeof rsync_state.why, "cannot make the staging directory %s: %s", rsync_state.rundir, strerror(errno));
		log_warnx("%s", rsync_state.why);
		rm_rundir();
		return_queue();
		return;
	}
	int n = stage_batch(list);
	bool written = fclose(list) == 0;
	if (n == 0 || !written) {
		if (spare) { /* not used: its directory was the run's */
			rsync_state.spare = spare;
			drop_spare();
		}
		spare = NULL;
	}
	if (n == 0) {
		rm_rundir();
		return;
	}
	int rc;
	if (!written) {
		log_warn("cannot write the file list of %s", rsync_state.rundir);
		snprintf(rsync_state.why, sizeof rsync_state.why, "cannot write the file list of the run: %s", strerror(errno));
	} else if (spare) {
		log_debug("run %u: %d files to the rsync prepared %.1f s ago", rsync_state.run_no, n,
			  (double)(now_ms() - spare->born_ms) / 1000);
		feed_list(spare);
		begin_run(spare, PH_SEND);
		prepare_spare();
		return;
	} else if ((rc = spawn_rsync(PH_SEND)) < 0) {
		snprintf(rsync_state.why, sizeof rsync_state.why, "cannot run %s: %s", rsync_state.rsync, uv_strerror(rc));
	} else {
		prepare_spare();
		return;
	}
	rsync_state.status = JOB_RETRY;
	finish_batch();
}

static void rsync_submit(struct job *j)
{
	if (j->fd < 0) {
		worker_result(j, JOB_PERMFAIL, 0, "the rsync worker carries files only");
		return;
	}
	if (rsync_state.refused) {
		hold(j);
		return;
	}
	struct rjob *r = xcalloc(1, sizeof *r);
	r->job = j;
	snprintf(r->name, sizeof r->name, "%s", j->remote_name ? j->remote_name : j->id);
	show_name(r->name, r->shown, sizeof r->shown);
	if (rsync_state.queue_tail)
		rsync_state.queue_tail->next = r;
	else
		rsync_state.queue = r;
	rsync_state.queue_tail = r;
	if (!rsync_state.running)
		start_run();
}

/* A memfd (close-on-exec: ssh reaches it through /proc/<our pid>) with the file's
 * contents. An unreadable known_hosts becomes an empty one, with a warning:
 * ssh then refuses every host key, as it did when it could not read the file. */
static int memfd_from(const char *key, const struct cfg_section *cfg, const char **why)
{
	size_t len;
	const char *data = worker_file(key, &len, why);
	if (!data && *why && strcmp(key, "known_hosts") == 0) {
		log_warnx("rsync.known_hosts: %s; no host key is trusted", *why);
		*why = NULL;
	}
	if (*why)
		return -1;
	int fd = memfd_create(key, MFD_CLOEXEC);
	if (fd < 0 || fchmod(fd, 0600) < 0) {
		*why = strerror(errno);
		return -1;
	}
	for (size_t off = 0; off < len;) {
		ssize_t n = write(fd, data + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*why = strerror(errno);
			close(fd);
			return -1;
		}
		off += (size_t)n;
	}
	return fd;
}

static int rsync_init(uv_loop_t *loop, const struct cfg_section *cfg, char *err, size_t errlen)
{
	if (servers_init(cfg, "remote_host", err, errlen) < 0)
		return UCGW_EXIT_CONFIG;
	if (!servers_failover()) {
		snprintf(err, errlen, "rsync.servers_policy: spread is not supported by rsync, whose runs share one ssh "
				      "connection to one server at a time; use failover");
		return UCGW_EXIT_CONFIG;
	}
	for (size_t i = 0; i < servers_count(); i++)
		if (servers_host_port(servers_url(i), (int)cfg_int(cfg, "port"), "rsync.remote_host", rsync_state.srv[i].host,
				      sizeof rsync_state.srv[i].host, &rsync_state.srv[i].port, err, errlen) < 0)
			return UCGW_EXIT_CONFIG;
	/* the loader warns of these (config/rsync_options.c); the worker refuses
	 * them: bad configuration, not restarted, the reason in `ucgwctl workers` */
	const struct cfg_value *opts = cfg_get(cfg, "options");
	size_t at;
	char opt[64];
	const char *refused = cfg_rsync_refused(opts->items, opts->nitems, &at, opt, sizeof opt);
	if (refused) {
		snprintf(err, errlen, "rsync.options: %s is refused: %s", opt, refused);
		return UCGW_EXIT_CONFIG;
	}
	if (!(rsync_state.rsync = find_program(cfg_str(cfg, "rsync_path")))) {
		snprintf(err, errlen, "rsync.rsync_path: program '%s' not found (install rsync or set rsync_path)",
			 cfg_str(cfg, "rsync_path"));
		return UCGW_EXIT_CONFIG;
	}
	char *ssh = find_program(cfg_str(cfg, "ssh_path"));
	if (!ssh) {
		snprintf(err, errlen, "rsync.ssh_path: program '%s' not found (install openssh-client)",
			 cfg_str(cfg, "ssh_path"));
		return UCGW_EXIT_CONFIG;
	}
	rsync_state.options = opts->items;
	rsync_state.noptions = opts->nitems;
	/* key_file and known_hosts as the supervisor read them (the worker may run
	 * as a user that cannot open them), in memory files of this process that
	 * ssh opens as /proc/<worker pid>/fd/N (not /proc/self: ssh closes every
	 * descriptor it inherits before it reads its options). The key's is 0600
	 * and owned by the worker's user, as ssh insists. */
	const char *why;
	int keyfd = -1, khfd = memfd_from("known_hosts", cfg, &why);
	if (khfd < 0) {
		snprintf(err, errlen, "rsync.known_hosts: %s", why);
		return UCGW_EXIT_CONFIG;
	}
	if (cfg_str(cfg, "key_file") && (keyfd = memfd_from("key_file", cfg, &why)) < 0) {
		snprintf(err, errlen, "rsync.key_file: %s", why);
		return UCGW_EXIT_CONFIG;
	}
	char tmpl[] = "/tmp/ucgw-rsync-XXXXXX";
	const char *td = getenv("TMPDIR");
	char *t = td ? xasprintf("%s/ucgw-rsync-XXXXXX", td) : xstrdup(tmpl);
	if (!mkdtemp(t)) {
		snprintf(err, errlen, "cannot create a staging directory: %s", strerror(errno));
		free(t);
		return UCGW_EXIT_CONFIG;
	}
	rsync_state.stage = t;
	int pid = (int)getpid();
	rsync_state.mux = mux_options();
	char *keyopt = keyfd >= 0 ? xasprintf(" -i /proc/%d/fd/%d -o IdentitiesOnly=yes", pid, keyfd) : xstrdup("");
	rsync_state.ssh_prog = ssh;
	rsync_state.ssh_opts = xasprintf("%s -o UserKnownHostsFile=/proc/%d/fd/%d -o StrictHostKeyChecking=yes "
					 "-o BatchMode=yes -o ConnectTimeout=10", keyopt, pid, khfd);
	free(keyopt);
	rsync_state.user = xstrdup(cfg_str(cfg, "remote_user"));
	rsync_state.remote_path = xstrdup(cfg_str(cfg, "remote_path"));
	use_server(0);
	rsync_state.timeout_ms = (uint64_t)(cfg_num(cfg, "timeout") * 1000);
	rsync_state.batch_max = (size_t)cfg_int(cfg, "batch_max");
	uv_timer_init(loop, &rsync_state.timer);
	uv_timer_init(loop, &rsync_state.check_timer);
	uv_timer_init(loop, &rsync_state.servers_tick);
	uv_timer_start(&rsync_state.servers_tick, on_servers_tick, 1000, 1000);
	/* the master from the loop's first turn: after the sandbox is in, which
	 * it inherits; up before the first file, which then finds it */
	uv_timer_init(loop, &rsync_state.master_timer);
	uv_timer_start(&rsync_state.master_timer, start_master, 0, 0);
	/* Reachability is learned from runs; until the first, say what we know. */
	worker_health(true, 0, "rsync to %s (not tried yet)", rsync_state.dest);
	return 0;
}

static void rsync_shutdown(void)
{
	if (rsync_state.cur)
		uv_process_kill(&rsync_state.cur->proc, SIGTERM);
	drop_spare();
	stop_master();
	if (rsync_state.rundir[0])
		rm_rundir();
	rmdir(rsync_state.stage);
}

static const struct worker_ops rsync_ops = {
	.name = "rsync",
	.init = rsync_init,
	.submit = rsync_submit,
	.shutdown = rsync_shutdown,
};

WORKER_MAIN(rsync_ops)
