/* ucgw-rsync: files with the rsync program over ssh. Files that queue up while
 * a run is in progress go together in the next run (--files-from), so many small
 * files share one SSH connection. The worker has descriptors, not paths: each run
 * gets a private directory of symlinks to /proc/self/fd/N, which rsync follows
 * (--copy-links). Partial files wait in a partial directory, never under their
 * final name. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "workers/worker.h"

struct rjob {
	struct job *job;
	char name[256];
	bool done;
	struct rjob *next;
};

/* Each run has its own handles: the previous run's may still be closing. */
struct run {
	uv_process_t proc;
	uv_pipe_t out, err;
	int open;
};

static struct {
	char *rsync, *ssh_cmd, *dest, *stage;
	char **options;
	size_t noptions;
	uint64_t timeout_ms;
	size_t batch_max;
	struct rjob *queue, *queue_tail;   /* waiting for the next run */
	struct rjob *running;              /* in the current run */
	struct run *cur;                   /* the handles of the run in progress */
	bool busy;
	char outbuf[8192], errtail[2048];
	size_t outlen;
	uv_timer_t timer;
	unsigned run_no;
	char rundir[512];
	bool timed_out;
} R;

/* ---- options ---- */

static const char *refused_option(const struct cfg_value *opts)
{
	for (size_t i = 0; i < opts->nitems; i++) {
		const char *o = opts->items[i];
		if (strncmp(o, "--delete", 8) == 0 || strcmp(o, "--del") == 0 || strcmp(o, "--remove-source-files") == 0)
			return o;
	}
	return NULL;
}

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

static void start_run(void);

static void rm_rundir(void)
{
	DIR *d = opendir(R.rundir);
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.') {
			char *p = xasprintf("%s/%s", R.rundir, e->d_name);
			unlink(p);
			free(p);
		}
	if (d)
		closedir(d);
	char *list = xasprintf("%s.list", R.rundir);
	unlink(list);
	free(list);
	rmdir(R.rundir);
}

/* rsync's exit codes: which may work later, which never will. */
static enum job_status status_of_exit(int64_t code)
{
	switch (code) {
	case 0: return JOB_OK;
	case 1: case 2: case 4: return JOB_PERMFAIL; /* syntax, protocol, unsupported option */
	case 3: case 11: return JOB_PERMFAIL;         /* bad remote path, file I/O at the server */
	default: return JOB_RETRY;                     /* 5,10,12,23,24,30,35,255 (ssh) ... */
	}
}

static void mark_transferred(void)
{
	/* --out-format=%n prints one name per file sent */
	char *save = NULL;
	R.outbuf[R.outlen] = '\0';
	for (char *line = strtok_r(R.outbuf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		for (struct rjob *r = R.running; r; r = r->next)
			if (strcmp(r->name, line) == 0)
				r->done = true;
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

static void on_exit_run(uv_process_t *p, int64_t code, int sig)
{
	uv_timer_stop(&R.timer);
	close_run_handle((uv_handle_t *)p);
	R.cur = NULL;
	mark_transferred();
	enum job_status st = sig ? JOB_RETRY : status_of_exit(code);
	char why[2300];
	if (R.timed_out)
		snprintf(why, sizeof why, "rsync run timed out after %llu ms", (unsigned long long)R.timeout_ms);
	else
		snprintf(why, sizeof why, "rsync exit %lld: %s", (long long)code, R.errtail[0] ? R.errtail : "no message");
	while (R.running) {
		struct rjob *r = R.running;
		R.running = r->next;
		if (st == JOB_OK || r->done) {
			worker_progress(r->job, r->job->size);
			worker_result(r->job, JOB_OK, 0, NULL);
		} else {
			worker_result(r->job, st, 0, "%s", why);
		}
		free(r);
	}
	if (st == JOB_OK)
		worker_health(true, 0, "rsync to %s works", R.dest);
	else if (st == JOB_RETRY && (code == 255 || code == 10 || code == 12 || code == 30 || code == 35))
		worker_health(false, 0, "%s", why);
	rm_rundir();
	R.busy = false;
	if (R.queue)
		start_run();
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char scratch[4096];
	buf->base = scratch;
	buf->len = sizeof scratch;
}

static void on_out(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	if (n > 0) {
		size_t room = sizeof R.outbuf - 1 - R.outlen, take = (size_t)n < room ? (size_t)n : room;
		memcpy(R.outbuf + R.outlen, buf->base, take);
		R.outlen += take;
	} else if (n < 0) {
		close_run_handle((uv_handle_t *)s);
	}
}

static void on_err(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	if (n > 0) {
		/* keep the last line or two: rsync ends with the reason */
		size_t len = strlen(R.errtail), add = (size_t)n;
		if (len + add >= sizeof R.errtail) {
			size_t drop = len + add - sizeof R.errtail + 1;
			if (drop > len)
				drop = len;
			memmove(R.errtail, R.errtail + drop, len - drop + 1);
			len -= drop;
		}
		size_t take = add < sizeof R.errtail - 1 - len ? add : sizeof R.errtail - 1 - len;
		memcpy(R.errtail + len, buf->base + (add - take), take);
		R.errtail[len + take] = '\0';
		for (char *c = R.errtail; *c; c++)
			if (*c == '\n')
				*c = ' ';
	} else if (n < 0) {
		close_run_handle((uv_handle_t *)s);
	}
}

static void on_timeout(uv_timer_t *t)
{
	R.timed_out = true;
	if (R.cur)
		uv_process_kill(&R.cur->proc, SIGKILL);
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

/* Symlink each job's descriptor into this run's directory under its remote name. */
static int stage_batch(FILE *list)
{
	size_t n = 0;
	struct rjob **tail = &R.running;
	while (R.queue && n < R.batch_max) {
		struct rjob *r = R.queue;
		bool dup = false;
		for (struct rjob *o = R.running; o; o = o->next)
			dup |= strcmp(o->name, r->name) == 0;
		if (dup)
			break; /* the same name twice goes in the next run */
		R.queue = r->next;
		if (!R.queue)
			R.queue_tail = NULL;
		char target[64], *link = xasprintf("%s/%s", R.rundir, r->name);
		snprintf(target, sizeof target, "/proc/%d/fd/%d", (int)getpid(), r->job->fd);
		if (stage_one(target, link, r->job->fd) < 0) {
			worker_result(r->job, JOB_RETRY, 0, "cannot stage the file: %s", strerror(errno));
			free(r);
		} else {
			fprintf(list, "%s\n", r->name);
			r->next = NULL;
			*tail = r;
			tail = &r->next;
			n++;
		}
		free(link);
	}
	return (int)n;
}

static void start_run(void)
{
	snprintf(R.rundir, sizeof R.rundir, "%s/run%u", R.stage, ++R.run_no);
	char *listpath = xasprintf("%s.list", R.rundir);
	FILE *list = mkdir(R.rundir, 0700) == 0 ? fopen(listpath, "w") : NULL;
	if (!list) {
		log_warn("cannot make the staging directory %s", R.rundir);
		free(listpath);
		return;
	}
	int n = stage_batch(list);
	fclose(list);
	if (n == 0) {
		free(listpath);
		rm_rundir();
		return;
	}
	char *files_from = xasprintf("--files-from=%s", listpath);
	char *timeout = xasprintf("--timeout=%llu", (unsigned long long)(R.timeout_ms / 1000 + 1));
	char *src = xasprintf("%s/", R.rundir);
	const char *argv[64];
	size_t a = 0;
	argv[a++] = R.rsync;
	for (size_t i = 0; i < R.noptions && a < 40; i++)
		argv[a++] = R.options[i];
	const char *fixed[] = { "--copy-links", "--mkpath", "--partial-dir=.ucgw-partial", "--out-format=%n",
				files_from, timeout, "-e", R.ssh_cmd, src, R.dest, NULL };
	for (size_t i = 0; fixed[i]; i++)
		argv[a++] = fixed[i];
	argv[a] = NULL;
	R.outlen = 0;
	R.errtail[0] = '\0';
	R.timed_out = false;
	struct run *run = xcalloc(1, sizeof *run);
	uv_pipe_init(worker_loop(), &run->out, 0);
	uv_pipe_init(worker_loop(), &run->err, 0);
	run->out.data = run->err.data = run->proc.data = run;
	run->open = 3;
	uv_stdio_container_t io[3] = {
		{ .flags = UV_IGNORE },
		{ .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&run->out },
		{ .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&run->err },
	};
	uv_process_options_t po = { .exit_cb = on_exit_run, .file = R.rsync, .args = (char **)argv,
				    .stdio_count = 3, .stdio = io };
	int rc = uv_spawn(worker_loop(), &run->proc, &po);
	free(files_from);
	free(timeout);
	free(src);
	free(listpath);
	R.busy = true;
	R.cur = run;
	if (rc < 0) {
		snprintf(R.errtail, sizeof R.errtail, "cannot run %s: %s", R.rsync, uv_strerror(rc));
		close_run_handle((uv_handle_t *)&run->out);
		close_run_handle((uv_handle_t *)&run->err);
		on_exit_run(&run->proc, 1, 0);
		return;
	}
	uv_read_start((uv_stream_t *)&run->out, on_alloc, on_out);
	uv_read_start((uv_stream_t *)&run->err, on_alloc, on_err);
	uv_timer_start(&R.timer, on_timeout, R.timeout_ms, 0);
}

static void rsync_submit(struct job *j)
{
	if (j->fd < 0) {
		worker_result(j, JOB_PERMFAIL, 0, "the rsync worker carries files only");
		return;
	}
	struct rjob *r = xcalloc(1, sizeof *r);
	r->job = j;
	snprintf(r->name, sizeof r->name, "%s", j->remote_name ? j->remote_name : j->id);
	if (R.queue_tail)
		R.queue_tail->next = r;
	else
		R.queue = r;
	R.queue_tail = r;
	if (!R.busy)
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
	const struct cfg_value *opts = cfg_get(cfg, "options");
	const char *bad = refused_option(opts);
	if (bad) {
		snprintf(err, errlen, "rsync.options: %s is refused: it can delete files on the server", bad);
		return UCGW_EXIT_CONFIG;
	}
	if (!(R.rsync = find_program(cfg_str(cfg, "rsync_path")))) {
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
	R.options = opts->items;
	R.noptions = opts->nitems;
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
	int pid = (int)getpid();
	char *keyopt = keyfd >= 0 ? xasprintf(" -i /proc/%d/fd/%d -o IdentitiesOnly=yes", pid, keyfd) : xstrdup("");
	R.ssh_cmd = xasprintf("%s -p %lld%s -o UserKnownHostsFile=/proc/%d/fd/%d -o StrictHostKeyChecking=yes "
			      "-o BatchMode=yes -o ConnectTimeout=10",
			      ssh, (long long)cfg_int(cfg, "port"), keyopt, pid, khfd);
	free(keyopt);
	free(ssh);
	R.dest = xasprintf("%s@%s:%s/", cfg_str(cfg, "remote_user"), cfg_str(cfg, "remote_host"),
			   cfg_str(cfg, "remote_path"));
	R.timeout_ms = (uint64_t)(cfg_num(cfg, "timeout") * 1000);
	R.batch_max = (size_t)cfg_int(cfg, "batch_max");
	char tmpl[] = "/tmp/ucgw-rsync-XXXXXX";
	const char *td = getenv("TMPDIR");
	char *t = td ? xasprintf("%s/ucgw-rsync-XXXXXX", td) : xstrdup(tmpl);
	if (!mkdtemp(t)) {
		snprintf(err, errlen, "cannot create a staging directory: %s", strerror(errno));
		free(t);
		return UCGW_EXIT_CONFIG;
	}
	R.stage = t;
	uv_timer_init(loop, &R.timer);
	/* Reachability is learned from runs; until the first, say what we know. */
	worker_health(true, 0, "rsync to %s (not tried yet)", R.dest);
	return 0;
}

static void rsync_shutdown(void)
{
	if (R.busy && R.cur)
		uv_process_kill(&R.cur->proc, SIGTERM);
	if (R.rundir[0])
		rm_rundir();
	rmdir(R.stage);
}

static const struct worker_ops rsync_ops = {
	.name = "rsync",
	.init = rsync_init,
	.submit = rsync_submit,
	.shutdown = rsync_shutdown,
};

WORKER_MAIN(rsync_ops)
