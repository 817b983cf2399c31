/* ucgw-sftp: files over SFTP with libssh2, on one SSH session kept open and
 * reused for every file. libssh2 runs blocking in a thread of its own (its
 * non-blocking mode would need a state machine around every call); the libuv
 * loop keeps answering the supervisor, and results come back through a
 * uv_async. Each file goes to ".NAME.ID.ucgw-part" beside the target (ID: the
 * message id), resumes from the part's size after a dropped connection, and is
 * renamed atomically once its size is right, so the server never shows a half
 * file under the final name. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libssh2.h>
#include <libssh2_sftp.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "workers/worker.h"

enum ev_kind { EV_RESULT, EV_HEALTH, EV_PROGRESS };

struct event {                     /* thread -> loop */
	enum ev_kind kind;
	struct job *job;
	enum job_status status;
	bool connected;
	uint64_t n;                    /* progress bytes, or rtt */
	char text[300];
	struct event *next;
};

struct qjob {                      /* loop -> thread */
	struct job *job;
	struct qjob *next;
};

static struct {
	/* configuration (read-only once the thread runs) */
	char host[256], user[128], remote[1024];
	char *password, *key_file, *passphrase, *known_hosts, *fingerprint;
	/* key_file and known_hosts as the supervisor read them: the worker may run
	 * as a user that cannot open them */
	const char *key_data, *kh_data, *kh_why;
	size_t key_len, kh_len;
	int port;
	size_t bufsize;
	long timeout_ms;
	/* the thread's own */
	int sock;                      /* set and closed under the lock: sftp_shutdown shuts it down */
	LIBSSH2_SESSION *session;
	LIBSSH2_SFTP *sftp;
	char *buf;
	/* shared, under the lock */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct qjob *jobs, *jobs_tail;
	struct event *events, *events_tail;
	bool stop;
	pthread_t thread;
	uv_async_t async;
	uv_timer_t start;               /* the thread starts at the loop's first turn */
	bool started;                   /* the loop's: the thread runs (join it) */
} S = { .lock = PTHREAD_MUTEX_INITIALIZER, .sock = -1 }; /* cond: sftp_init, on CLOCK_MONOTONIC */

/* ---- talking to the loop ---- */

static void post(struct event *e)
{
	pthread_mutex_lock(&S.lock);
	if (S.events_tail)
		S.events_tail->next = e;
	else
		S.events = e;
	S.events_tail = e;
	pthread_mutex_unlock(&S.lock);
	uv_async_send(&S.async);
}

static void post_result(struct job *j, enum job_status st, const char *fmt, ...) PRINTF(3, 4);
static void post_result(struct job *j, enum job_status st, const char *fmt, ...)
{
	struct event *e = xcalloc(1, sizeof *e);
	e->kind = EV_RESULT;
	e->job = j;
	e->status = st;
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->text, sizeof e->text, fmt, ap);
		va_end(ap);
	}
	post(e);
}

static void post_health(bool up, uint64_t rtt, const char *text)
{
	struct event *e = xcalloc(1, sizeof *e);
	e->kind = EV_HEALTH;
	e->connected = up;
	e->n = rtt;
	snprintf(e->text, sizeof e->text, "%s", text);
	post(e);
}

static void on_events(uv_async_t *a)
{
	pthread_mutex_lock(&S.lock);
	struct event *e = S.events;
	S.events = S.events_tail = NULL;
	pthread_mutex_unlock(&S.lock);
	while (e) {
		struct event *next = e->next;
		switch (e->kind) {
		case EV_RESULT: worker_result(e->job, e->status, 0, e->text[0] ? "%s" : NULL, e->text); break;
		case EV_HEALTH: worker_health(e->connected, e->n, "%s", e->text); break;
		case EV_PROGRESS: worker_progress(e->job, e->n); break;
		}
		free(e);
		e = next;
	}
}

/* ---- the session ---- */

static void drop_session(void)
{
	if (S.sftp)
		libssh2_sftp_shutdown(S.sftp);
	if (S.session) {
		libssh2_session_disconnect(S.session, "bye");
		libssh2_session_free(S.session);
	}
	pthread_mutex_lock(&S.lock);
	if (S.sock >= 0)
		close(S.sock);
	S.sock = -1;
	pthread_mutex_unlock(&S.lock);
	S.sftp = NULL;
	S.session = NULL;
}

/* The socket being connected becomes S.sock at once, so that sftp_shutdown can
 * break a connect, a handshake or a transfer; none is started after a stop. */
static bool publish_sock(int fd)
{
	pthread_mutex_lock(&S.lock);
	bool stop = S.stop;
	if (!stop)
		S.sock = fd;
	pthread_mutex_unlock(&S.lock);
	return !stop;
}

static void unpublish_close(int fd)
{
	pthread_mutex_lock(&S.lock);
	if (S.sock == fd)
		S.sock = -1;
	close(fd);
	pthread_mutex_unlock(&S.lock);
}

/* Every address the name resolves to, in getaddrinfo's order, until one
 * connects (a host with an IPv6 address that does not route and an IPv4 one
 * that does); err has the last address's failure. All of them together take
 * at most the timeout: each waits for its share of the time left, split evenly
 * among the addresses not yet tried, so one that never answers costs the next
 * ones only its share, and what a quick failure leaves goes to those after it
 * (the last address gets all that remains). */
static int tcp_connect(char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	char port[8];
	snprintf(port, sizeof port, "%d", S.port);
	int rc = getaddrinfo(S.host, port, &hints, &res);
	if (rc) {
		snprintf(err, errlen, "cannot resolve %s: %s", S.host, gai_strerror(rc));
		return -1;
	}
	snprintf(err, errlen, "%s has no address", S.host);
	int fd = -1, left = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
		left++;
	uint64_t deadline = now_ms() + (uint64_t)S.timeout_ms;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next, left--) {
		char addr[NI_MAXHOST];
		if (getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof addr, NULL, 0, NI_NUMERICHOST))
			snprintf(addr, sizeof addr, "?");
		int s = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (s < 0) {
			snprintf(err, errlen, "cannot make a socket for %s (%s): %s", S.host, addr, strerror(errno));
			continue;
		}
		if (!publish_sock(s)) {
			close(s);
			snprintf(err, errlen, "the worker is stopping");
			break;
		}
		int r = connect(s, ai->ai_addr, ai->ai_addrlen);
		if (r < 0 && errno == EINPROGRESS) {
			struct pollfd p = { s, POLLOUT, 0 };
			int soerr = 0;
			socklen_t sl = sizeof soerr;
			uint64_t now = now_ms();
			int share = now < deadline ? (int)((deadline - now) / (uint64_t)left) : 0;
			if (poll(&p, 1, share) <= 0)
				soerr = ETIMEDOUT;
			else if (getsockopt(s, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
				soerr = errno;
			r = soerr ? -1 : 0;
			errno = soerr;
		}
		if (r == 0) {
			fd = s;
			break;
		}
		snprintf(err, errlen, "connect to %s:%d (%s) failed: %s", S.host, S.port, addr, strerror(errno));
		unpublish_close(s);
	}
	freeaddrinfo(res);
	if (fd < 0)
		return -1;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

static int known_type(int hostkey_type)
{
	switch (hostkey_type) {
	case LIBSSH2_HOSTKEY_TYPE_RSA: return LIBSSH2_KNOWNHOST_KEY_SSHRSA;
	case LIBSSH2_HOSTKEY_TYPE_DSS: return LIBSSH2_KNOWNHOST_KEY_SSHDSS;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return LIBSSH2_KNOWNHOST_KEY_ECDSA_256;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return LIBSSH2_KNOWNHOST_KEY_ECDSA_384;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return LIBSSH2_KNOWNHOST_KEY_ECDSA_521;
	case LIBSSH2_HOSTKEY_TYPE_ED25519: return LIBSSH2_KNOWNHOST_KEY_ED25519;
	default: return LIBSSH2_KNOWNHOST_KEY_UNKNOWN;
	}
}

/* "SHA256:base64-without-padding", as ssh-keygen -l prints it. */
static void fingerprint_of(char *out, size_t len)
{
	const unsigned char *h = (const unsigned char *)libssh2_hostkey_hash(S.session, LIBSSH2_HOSTKEY_HASH_SHA256);
	unsigned char b64[64];
	int n = h ? EVP_EncodeBlock(b64, h, 32) : 0;
	while (n > 0 && b64[n - 1] == '=')
		n--;
	snprintf(out, len, "SHA256:%.*s", n, b64);
}

/* Trust only a known or pinned host key; say which key was offered otherwise. */
static int check_host_key(char *err, size_t errlen)
{
	char fp[80];
	fingerprint_of(fp, sizeof fp);
	if (S.fingerprint) {
		if (strcmp(fp, S.fingerprint) == 0)
			return 0;
		snprintf(err, errlen, "host key of %s:%d is %s, not the pinned %s: refusing to upload", S.host, S.port, fp,
			 S.fingerprint);
		return -1;
	}
	size_t klen;
	int type;
	const char *key = libssh2_session_hostkey(S.session, &klen, &type);
	LIBSSH2_KNOWNHOSTS *kh = libssh2_knownhost_init(S.session);
	bool kh_ok = kh && S.kh_data;
	for (const char *line = S.kh_data, *end = S.kh_data + S.kh_len; kh_ok && line < end;) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		size_t n = nl ? (size_t)(nl - line) + 1 : (size_t)(end - line);
		/* comments and blank lines are skipped by libssh2 itself */
		kh_ok = libssh2_knownhost_readline(kh, line, n, LIBSSH2_KNOWNHOST_FILE_OPENSSH) == 0;
		line += n;
	}
	if (!kh_ok) {
		snprintf(err, errlen, "cannot read known_hosts %s%s%s: refusing to upload", S.known_hosts,
			 S.kh_why ? ": " : "", S.kh_why ? S.kh_why : "");
		if (kh)
			libssh2_knownhost_free(kh);
		return -1;
	}
	struct libssh2_knownhost *found;
	int rc = libssh2_knownhost_checkp(kh, S.host, S.port, key, klen,
					  LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | known_type(type), &found);
	libssh2_knownhost_free(kh);
	if (rc == LIBSSH2_KNOWNHOST_CHECK_MATCH)
		return 0;
	snprintf(err, errlen, "%s host key for %s:%d (%s) %s: refusing to upload",
		 rc == LIBSSH2_KNOWNHOST_CHECK_MISMATCH ? "CHANGED" : "unknown", S.host, S.port, fp,
		 rc == LIBSSH2_KNOWNHOST_CHECK_MISMATCH ? "differs from known_hosts" : "is not in known_hosts");
	return -1;
}

static const char *ssh_error(void)
{
	static char buf[256];
	char *msg = NULL;
	if (S.session)
		libssh2_session_last_error(S.session, &msg, NULL, 0);
	snprintf(buf, sizeof buf, "%s", msg && *msg ? msg : "SSH error");
	return buf;
}

static int open_session(char *err, size_t errlen)
{
	uint64_t t0 = now_ms();
	if (tcp_connect(err, errlen) < 0)
		return -1;
	S.session = libssh2_session_init();
	libssh2_session_set_blocking(S.session, 1);
	libssh2_session_set_timeout(S.session, S.timeout_ms);
	if (libssh2_session_handshake(S.session, S.sock)) {
		snprintf(err, errlen, "SSH handshake with %s:%d failed: %s", S.host, S.port, ssh_error());
		return -1;
	}
	if (check_host_key(err, errlen) < 0)
		return -1;
	int rc = S.key_data ? libssh2_userauth_publickey_frommemory(S.session, S.user, strlen(S.user), NULL, 0, S.key_data,
								    S.key_len, S.passphrase)
			    : libssh2_userauth_password(S.session, S.user, S.password ? S.password : "");
	if (rc) {
		snprintf(err, errlen, "SSH authentication as %s failed: %s", S.user, ssh_error());
		return -1;
	}
	if (!(S.sftp = libssh2_sftp_init(S.session))) {
		snprintf(err, errlen, "SFTP subsystem refused: %s", ssh_error());
		return -1;
	}
	libssh2_keepalive_config(S.session, 1, 15);
	char up[300];
	snprintf(up, sizeof up, "connected to %s:%d", S.host, S.port);
	post_health(true, (now_ms() - t0) * 1000, up);
	return 0;
}

/* ---- one file ---- */

static const char *fx_name(unsigned long fx)
{
	static const char *const names[] = {
		"ok", "end of file", "no such file", "permission denied", "failure", "bad message", "no connection",
		"connection lost", "operation unsupported", "invalid handle", "no such path", "file already exists",
		"write protected", "no media", "no space on filesystem", "quota exceeded", "unknown principal",
		"lock conflict", "directory not empty", "not a directory", "invalid filename", "link loop",
	};
	return fx < sizeof names / sizeof names[0] ? names[fx] : "unknown SFTP status";
}

/* Why the libssh2 call that just returned rc failed, into why; true when that is
 * for good. Only a call that returned LIBSSH2_ERROR_SFTP_PROTOCOL got an SFTP
 * status from the server: libssh2_sftp_last_error() changes only when a status
 * arrives, so after a timeout or a socket error it still holds the status of
 * some earlier call (a permission refused minutes ago), and must not decide
 * that a dropped connection loses the file. Call it right after the failing
 * call, before any other SFTP request. */
static bool sftp_why(int rc, char *why, size_t len)
{
	if (rc != LIBSSH2_ERROR_SFTP_PROTOCOL) {
		snprintf(why, len, "%s", ssh_error());
		return false;
	}
	unsigned long fx = libssh2_sftp_last_error(S.sftp);
	snprintf(why, len, "%s (SFTP status %lu)", fx_name(fx), fx);
	return fx == LIBSSH2_FX_PERMISSION_DENIED || fx == LIBSSH2_FX_WRITE_PROTECT ||
	       fx == LIBSSH2_FX_NO_SPACE_ON_FILESYSTEM || fx == LIBSSH2_FX_QUOTA_EXCEEDED;
}

static void mkdirs(const char *dir)
{
	char path[1024];
	snprintf(path, sizeof path, "%s", dir);
	for (char *p = path + 1;; p++) {
		if (*p == '/' || !*p) {
			char c = *p;
			*p = '\0';
			LIBSSH2_SFTP_ATTRIBUTES a;
			if (libssh2_sftp_stat(S.sftp, path, &a) != 0)
				libssh2_sftp_mkdir(S.sftp, path, 0755);
			*p = c;
			if (!c)
				break;
		}
	}
}

/* The part file of one message: ".NAME.ID.ucgw-part" beside the target. The id
 * makes it this message's own, so a resume only ever continues this message's
 * bytes: a part left by another message of the same name (a camera that reuses
 * names, a cut transfer that was purged or went out over rsync) is never
 * appended to. NAME is only there for people and is shortened (at a UTF-8
 * character boundary) so the whole stays within the 255 bytes of a file name. */
#define PART_SUFFIX ".ucgw-part"
#define NAME_MAX_BYTES 255
static void part_name(char *out, size_t len, const char *name, const char *id)
{
	size_t room = NAME_MAX_BYTES - (1 + 1 + strlen(id) + strlen(PART_SUFFIX)), n = strlen(name);
	if (n > room) {
		n = room;
		while (n > 0 && ((unsigned char)name[n] & 0xC0) == 0x80)
			n--;
	}
	snprintf(out, len, "%s/.%.*s.%s" PART_SUFFIX, S.remote, (int)n, name, id);
}

/* 0 done, -1 retry (session trouble), -2 permanent. */
static int upload(struct job *j, char *err, size_t errlen)
{
	const char *name = j->remote_name ? j->remote_name : j->id;
	char final[1400], part[1400];
	snprintf(final, sizeof final, "%s/%s", S.remote, name);
	part_name(part, sizeof part, name, j->id);
	mkdirs(S.remote);
	LIBSSH2_SFTP_ATTRIBUTES a;
	uint64_t off = 0;
	if (libssh2_sftp_stat(S.sftp, part, &a) == 0 && (a.flags & LIBSSH2_SFTP_ATTR_SIZE) && a.filesize <= j->size)
		off = a.filesize; /* a transfer cut short: go on from there */
	unsigned long flags = LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | (off ? 0 : LIBSSH2_FXF_TRUNC);
	char why[200];
	LIBSSH2_SFTP_HANDLE *h = libssh2_sftp_open(S.sftp, part, flags, 0644);
	if (!h) {
		bool permanent = sftp_why(libssh2_session_last_errno(S.session), why, sizeof why);
		snprintf(err, errlen, "cannot open %s on the server: %s", part, why);
		return permanent ? -2 : -1;
	}
	libssh2_sftp_seek64(h, off);
	uint64_t last_progress = 0;
	while (off < j->size) {
		ssize_t n = pread(j->fd, S.buf, S.bufsize, (off_t)off);
		if (n <= 0) {
			snprintf(err, errlen, "reading the local file: %s", n < 0 ? strerror(errno) : "it shrank");
			libssh2_sftp_close(h);
			return -1;
		}
		for (ssize_t done = 0; done < n;) {
			ssize_t w = libssh2_sftp_write(h, S.buf + done, (size_t)(n - done));
			if (w < 0) {
				bool permanent = sftp_why((int)w, why, sizeof why);
				snprintf(err, errlen, "writing %s: %s", part, why);
				libssh2_sftp_close(h);
				return permanent ? -2 : -1;
			}
			done += w;
		}
		off += (uint64_t)n;
		if (now_ms() - last_progress >= 100) {
			last_progress = now_ms();
			struct event *e = xcalloc(1, sizeof *e);
			e->kind = EV_PROGRESS;
			e->job = j;
			e->n = off;
			post(e);
		}
	}
	int rc = libssh2_sftp_close(h);
	if (rc) {
		sftp_why(rc, why, sizeof why);
		snprintf(err, errlen, "closing %s: %s", part, why);
		return -1;
	}
	if ((rc = libssh2_sftp_stat(S.sftp, part, &a)) != 0) {
		sftp_why(rc, why, sizeof why);
		snprintf(err, errlen, "cannot check the size of %s: %s", part, why);
		return -1;
	}
	if (a.filesize != j->size) {
		snprintf(err, errlen, "%s has %llu bytes on the server, not %llu", part, (unsigned long long)a.filesize,
			 (unsigned long long)j->size);
		libssh2_sftp_unlink(S.sftp, part);
		return -1;
	}
	const long rflags = LIBSSH2_SFTP_RENAME_OVERWRITE | LIBSSH2_SFTP_RENAME_ATOMIC | LIBSSH2_SFTP_RENAME_NATIVE;
	rc = libssh2_sftp_rename_ex(S.sftp, part, (unsigned)strlen(part), final, (unsigned)strlen(final), rflags);
	if (rc) {
		/* SFTP version 3 (OpenSSH) refuses to rename onto an existing file, the
		 * overwrite flag is for later versions, and libssh2 1.10 cannot send
		 * posix-rename@openssh.com. A target that exists is a file of that name
		 * delivered before: often this very message, when a worker died after
		 * the rename and before it could say ok. The newer file replaces it:
		 * the server may find no file for a moment, but never half of one.
		 * When the target is not there, the rename's own refusal is the answer
		 * (not the "no such file" of the stat that looked for it). */
		bool permanent = sftp_why(rc, why, sizeof why);
		const char *step = "renaming";
		int st = libssh2_sftp_stat(S.sftp, final, &a);
		if (st == 0) {
			step = "removing the old file to rename";
			if ((rc = libssh2_sftp_unlink(S.sftp, final)) == 0) {
				step = "renaming after removing the old file";
				rc = libssh2_sftp_rename_ex(S.sftp, part, (unsigned)strlen(part), final,
							    (unsigned)strlen(final), rflags);
			}
			if (rc == 0)
				return 0;
			permanent = sftp_why(rc, why, sizeof why);
		} else if (st != LIBSSH2_ERROR_SFTP_PROTOCOL) { /* no answer: the session is in trouble */
			step = "looking for the old file to rename";
			permanent = sftp_why(st, why, sizeof why);
		}
		snprintf(err, errlen, "%s %s to %s: %s", step, part, final, why);
		return permanent ? -2 : -1;
	}
	return 0;
}

static void do_job(struct job *j)
{
	char err[300] = "";
	if (!S.session && open_session(err, sizeof err) < 0) {
		drop_session();
		post_health(false, 0, err);
		post_result(j, JOB_RETRY, "%s", err);
		return;
	}
	int rc = upload(j, err, sizeof err);
	if (rc == -1 && !S.session) {
		post_result(j, JOB_RETRY, "%s", err);
		return;
	}
	if (rc == -1) { /* the session may be dead: try once more on a new one */
		drop_session();
		if (open_session(err, sizeof err) == 0)
			rc = upload(j, err, sizeof err);
		if (rc != 0 && !S.session)
			post_health(false, 0, err);
	}
	if (rc == 0)
		post_result(j, JOB_OK, NULL);
	else
		post_result(j, rc == -2 ? JOB_PERMFAIL : JOB_RETRY, "%s", err);
	if (rc == -1)
		drop_session();
}

static void *run(void *arg)
{
	char err[300];
	if (open_session(err, sizeof err) < 0) {
		drop_session();
		post_health(false, 0, err);
	}
	for (;;) {
		pthread_mutex_lock(&S.lock);
		while (!S.jobs && !S.stop) {
			struct timespec ts; /* S.cond waits on CLOCK_MONOTONIC: a clock set back does not stall it */
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += 5;
			if (pthread_cond_timedwait(&S.cond, &S.lock, &ts) == ETIMEDOUT)
				break;
		}
		if (S.stop) {
			pthread_mutex_unlock(&S.lock);
			break;
		}
		struct qjob *q = S.jobs;
		if (q) {
			S.jobs = q->next;
			if (!S.jobs)
				S.jobs_tail = NULL;
		}
		pthread_mutex_unlock(&S.lock);
		if (q) {
			do_job(q->job);
			free(q);
			continue;
		}
		/* idle: keep the session alive, or find out the server is back */
		int next;
		if (S.session && libssh2_keepalive_send(S.session, &next)) {
			drop_session();
			post_health(false, 0, "the SSH session dropped");
		}
		if (!S.session && open_session(err, sizeof err) < 0) {
			drop_session();
			post_health(false, 0, err);
		}
	}
	drop_session();
	return NULL;
}

/* ---- the worker ---- */

static void sftp_submit(struct job *j)
{
	if (j->fd < 0) {
		worker_result(j, JOB_PERMFAIL, 0, "the sftp worker carries files only");
		return;
	}
	struct qjob *q = xcalloc(1, sizeof *q);
	q->job = j;
	pthread_mutex_lock(&S.lock);
	if (S.jobs_tail)
		S.jobs_tail->next = q;
	else
		S.jobs = q;
	S.jobs_tail = q;
	pthread_cond_signal(&S.cond);
	pthread_mutex_unlock(&S.lock);
}

static char *opt(const char *s) { return s ? xstrdup(s) : NULL; }

/* From the loop, so after the framework has installed the sandbox: the first
 * connection's handshake, data from the server, is parsed under the filter like
 * every later one. */
static void start_thread(uv_timer_t *t)
{
	if (S.stop)
		return;
	int rc = pthread_create(&S.thread, NULL, run, NULL);
	if (rc) {
		log_msg(LOG_LVL_ERR, "cannot start the SFTP thread: %s", strerror(rc));
		raise(SIGTERM); /* stop, answering the jobs in hand retry; the supervisor starts the worker again */
		return;
	}
	S.started = true;
}

static int sftp_init(uv_loop_t *loop, const struct cfg_section *cfg, char *err, size_t errlen)
{
	snprintf(S.host, sizeof S.host, "%s", cfg_str(cfg, "host"));
	snprintf(S.user, sizeof S.user, "%s", cfg_str(cfg, "username"));
	snprintf(S.remote, sizeof S.remote, "%s", cfg_str(cfg, "remote_path"));
	S.port = (int)cfg_int(cfg, "port");
	S.password = opt(cfg_str(cfg, "password"));
	S.key_file = opt(cfg_str(cfg, "key_file"));
	S.passphrase = opt(cfg_str(cfg, "key_passphrase"));
	S.known_hosts = opt(cfg_str(cfg, "known_hosts"));
	S.fingerprint = opt(cfg_str(cfg, "host_key_fingerprint"));
	S.bufsize = (size_t)cfg_int(cfg, "buffer_bytes");
	S.timeout_ms = (long)(cfg_num(cfg, "timeout") * 1000);
	if (!S.key_file && !S.password) {
		snprintf(err, errlen, "sftp: give key_file or password (or password_file)");
		return UCGW_EXIT_CONFIG;
	}
	const char *why;
	S.key_data = worker_file("key_file", &S.key_len, &why);
	if (why) {
		snprintf(err, errlen, "sftp.key_file: %s", why);
		return UCGW_EXIT_CONFIG;
	}
	S.kh_data = worker_file("known_hosts", &S.kh_len, &S.kh_why);
	if (!S.fingerprint && !S.kh_data) {
		snprintf(err, errlen, "sftp: no way to trust the server: known_hosts %s is not readable (%s) and no "
				      "host_key_fingerprint is pinned", S.known_hosts ? S.known_hosts : "(unset)",
			 S.kh_why ? S.kh_why : "unset");
		return UCGW_EXIT_CONFIG;
	}
	if (libssh2_init(0)) {
		snprintf(err, errlen, "libssh2_init failed");
		return UCGW_EXIT_CONFIG;
	}
	pthread_condattr_t ca;
	if (pthread_condattr_init(&ca) || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) ||
	    pthread_cond_init(&S.cond, &ca)) {
		snprintf(err, errlen, "cannot make a condition variable on CLOCK_MONOTONIC");
		return UCGW_EXIT_CONFIG;
	}
	pthread_condattr_destroy(&ca);
	S.buf = xmalloc(S.bufsize);
	uv_async_init(loop, &S.async, on_events);
	worker_health(false, 0, "connecting to %s:%d", S.host, S.port);
	uv_timer_init(loop, &S.start);
	uv_timer_start(&S.start, start_thread, 0, 0);
	return 0;
}

/* The thread may be in the middle of a file, using its job (and the job's fd):
 * it must be gone before the framework answers and frees the jobs in hand.
 * Shutting its socket down breaks whatever it waits for (a connect, a reply, a
 * full send buffer); the file it was sending fails `retry` and its part resumes
 * next time. What it posted is answered here, so a file it finished is `ok`. */
static void sftp_shutdown(void)
{
	pthread_mutex_lock(&S.lock);
	S.stop = true;
	if (S.sock >= 0)
		shutdown(S.sock, SHUT_RDWR);
	pthread_cond_signal(&S.cond);
	pthread_mutex_unlock(&S.lock);
	if (S.started)
		pthread_join(S.thread, NULL);
	on_events(&S.async);
	/* jobs it never took: the framework answers them retry */
	for (struct qjob *q = S.jobs, *next; q; q = next) {
		next = q->next;
		free(q);
	}
	S.jobs = S.jobs_tail = NULL;
}

static const struct worker_ops sftp_ops = {
	.name = "sftp",
	.init = sftp_init,
	.submit = sftp_submit,
	.shutdown = sftp_shutdown,
};

WORKER_MAIN(sftp_ops)
