/* ucgw-sftp: files over SFTP with libssh2, on one SSH session kept open and
 * reused for every file. libssh2 runs in a thread of its own, non-blocking,
 * with several files in flight over the one session (see "files in flight"
 * below); the libuv loop keeps answering the supervisor, and results come back
 * through a uv_async. Each file goes to ".NAME.ID.ucgw-part" beside the target
 * (ID: the message id), resumes from the part's size after a dropped
 * connection (a part that a refused write may have left with a hole is removed
 * instead), and is renamed atomically once it is closed and its size is
 * right, so the server never shows a half file under the final name. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libssh2.h>
#include <libssh2_sftp.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "workers/servers.h"
#include "workers/worker.h"

#define MAX_INFLIGHT (512 * 1024)

enum ev_kind { EV_RESULT, EV_HEALTH, EV_PROGRESS, EV_SERVER };

struct event {                     /* thread -> loop */
	enum ev_kind kind;
	struct job *job;
	enum job_status status;
	int server;                    /* EV_RESULT, EV_SERVER: the server's index (-1: none) */
	bool connected;
	uint64_t n;                    /* progress bytes, or rtt */
	char text[300];
	struct event *next;
};

struct qjob {                      /* loop -> thread */
	struct job *job;
	struct qjob *next;
};

struct server {                    /* one item of sftp.host */
	char host[256];
	int port;
};

static struct {
	/* configuration (read-only once the thread runs) */
	struct server srv[SERVERS_MAX];
	size_t nsrv;
	char user[128], remote[1024];
	char *password, *key_file, *passphrase, *known_hosts, *fingerprint;
	/* key_file and known_hosts as the supervisor read them: the worker may run
	 * as a user that cannot open them */
	const char *key_data, *kh_data, *kh_why;
	size_t key_len, kh_len;
	size_t inflight;                /* bytes of one file in flight: buffer_bytes, capped (see refill) */
	int files_in_flight;
	long timeout_ms;
	/* the thread's own */
	size_t cur;                    /* the server of the session (or of the next one) */
	char host[256];                /* and its host and port */
	int port;
	int sock;                      /* set and closed under the lock: sftp_shutdown shuts it down */
	LIBSSH2_SESSION *session;
	LIBSSH2_SFTP *sftp0;            /* the first lane's channel */
	uint64_t io_bytes, io_ms;       /* bytes through the socket, and when last */
	/* shared, under the lock */
	pthread_mutex_t lock;
	struct qjob *jobs, *jobs_tail;
	struct event *events, *events_tail;
	bool stop;
	bool failback;                 /* the loop asks for the first server again (failover) */
	int wake;                      /* eventfd: jobs or a stop for the thread */
	pthread_t thread;
	uv_async_t async;
	uv_timer_t start;               /* the thread starts at the loop's first turn */
	uv_timer_t servers_tick;        /* failback and the per-server report */
	bool started;                   /* the loop's: the thread runs (join it) */
} sftp_state = { .lock = PTHREAD_MUTEX_INITIALIZER, .sock = -1, .wake = -1 };

/* ---- talking to the loop ---- */

static void post(struct event *e)
{
	pthread_mutex_lock(&sftp_state.lock);
	if (sftp_state.events_tail)
		sftp_state.events_tail->next = e;
	else
		sftp_state.events = e;
	sftp_state.events_tail = e;
	pthread_mutex_unlock(&sftp_state.lock);
	uv_async_send(&sftp_state.async);
}

static void post_result(struct job *j, int server, enum job_status st, const char *fmt, ...) PRINTF(4, 5);
static void post_result(struct job *j, int server, enum job_status st, const char *fmt, ...)
{
	struct event *e = xcalloc(1, sizeof *e);
	e->kind = EV_RESULT;
	e->job = j;
	e->server = server;
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

/* Server i of sftp.host answered (up, with the round trip of the login) or
 * failed (why): the loop keeps the per-server state (servers.c). */
static void post_server(size_t i, bool up, uint64_t rtt, const char *why)
{
	struct event *e = xcalloc(1, sizeof *e);
	e->kind = EV_SERVER;
	e->server = (int)i;
	e->connected = up;
	e->n = rtt;
	snprintf(e->text, sizeof e->text, "%s", why ? why : "");
	post(e);
}

static void on_server(const struct event *e)
{
	size_t i = (size_t)e->server;
	if (e->connected) {
		servers_up(i, e->n);
		servers_use(i);
	} else {
		servers_down(i, e->text);
	}
}

static void on_events(uv_async_t *a)
{
	pthread_mutex_lock(&sftp_state.lock);
	struct event *e = sftp_state.events;
	sftp_state.events = sftp_state.events_tail = NULL;
	pthread_mutex_unlock(&sftp_state.lock);
	while (e) {
		struct event *next = e->next;
		switch (e->kind) {
		case EV_RESULT:
			if (e->server >= 0 && e->status == JOB_OK)
				servers_delivered((size_t)e->server, 0);
			else if (e->server >= 0)
				servers_failed((size_t)e->server);
			worker_result(e->job, e->status, 0, e->text[0] ? "%s" : NULL, e->text);
			break;
		case EV_SERVER: on_server(e); break;
		case EV_HEALTH: worker_health(e->connected, e->n, "%s", e->text); break;
		case EV_PROGRESS: worker_progress(e->job, e->n); break;
		}
		free(e);
		e = next;
	}
	servers_report(false);
}

/* ---- the session ---- */

/* The socket being connected becomes sftp_state.sock at once, so that sftp_shutdown can
 * break a connect, a handshake or a transfer; none is started after a stop. */
static bool publish_sock(int fd)
{
	pthread_mutex_lock(&sftp_state.lock);
	bool stop = sftp_state.stop;
	if (!stop)
		sftp_state.sock = fd;
	pthread_mutex_unlock(&sftp_state.lock);
	return !stop;
}

static void unpublish_close(int fd)
{
	pthread_mutex_lock(&sftp_state.lock);
	if (sftp_state.sock == fd)
		sftp_state.sock = -1;
	close(fd);
	pthread_mutex_unlock(&sftp_state.lock);
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
	snprintf(port, sizeof port, "%d", sftp_state.port);
	int rc = getaddrinfo(sftp_state.host, port, &hints, &res);
	if (rc) {
		snprintf(err, errlen, "cannot resolve %s: %s", sftp_state.host, gai_strerror(rc));
		return -1;
	}
	snprintf(err, errlen, "%s has no address", sftp_state.host);
	int fd = -1, left = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
		left++;
	uint64_t deadline = now_ms() + (uint64_t)sftp_state.timeout_ms;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next, left--) {
		char addr[NI_MAXHOST];
		if (getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof addr, NULL, 0, NI_NUMERICHOST))
			snprintf(addr, sizeof addr, "?");
		int s = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (s < 0) {
			snprintf(err, errlen, "cannot make a socket for %s (%s): %s", sftp_state.host, addr, strerror(errno));
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
		snprintf(err, errlen, "connect to %s:%d (%s) failed: %s", sftp_state.host, sftp_state.port, addr, strerror(errno));
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
	const unsigned char *h = (const unsigned char *)libssh2_hostkey_hash(sftp_state.session, LIBSSH2_HOSTKEY_HASH_SHA256);
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
	if (sftp_state.fingerprint) {
		if (strcmp(fp, sftp_state.fingerprint) == 0)
			return 0;
		snprintf(err, errlen, "host key of %s:%d is %s, not the pinned %s: refusing to upload", sftp_state.host, sftp_state.port, fp,
			 sftp_state.fingerprint);
		return -1;
	}
	size_t klen;
	int type;
	const char *key = libssh2_session_hostkey(sftp_state.session, &klen, &type);
	LIBSSH2_KNOWNHOSTS *kh = libssh2_knownhost_init(sftp_state.session);
	bool kh_ok = kh && sftp_state.kh_data;
	for (const char *line = sftp_state.kh_data, *end = sftp_state.kh_data + sftp_state.kh_len; kh_ok && line < end;) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		size_t n = nl ? (size_t)(nl - line) + 1 : (size_t)(end - line);
		/* comments and blank lines are skipped by libssh2 itself */
		kh_ok = libssh2_knownhost_readline(kh, line, n, LIBSSH2_KNOWNHOST_FILE_OPENSSH) == 0;
		line += n;
	}
	if (!kh_ok) {
		snprintf(err, errlen, "cannot read known_hosts %s%s%s: refusing to upload", sftp_state.known_hosts,
			 sftp_state.kh_why ? ": " : "", sftp_state.kh_why ? sftp_state.kh_why : "");
		if (kh)
			libssh2_knownhost_free(kh);
		return -1;
	}
	struct libssh2_knownhost *found;
	int rc = libssh2_knownhost_checkp(kh, sftp_state.host, sftp_state.port, key, klen,
					  LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | known_type(type), &found);
	libssh2_knownhost_free(kh);
	if (rc == LIBSSH2_KNOWNHOST_CHECK_MATCH)
		return 0;
	snprintf(err, errlen, "%s host key for %s:%d (%s) %s: refusing to upload",
		 rc == LIBSSH2_KNOWNHOST_CHECK_MISMATCH ? "CHANGED" : "unknown", sftp_state.host, sftp_state.port, fp,
		 rc == LIBSSH2_KNOWNHOST_CHECK_MISMATCH ? "differs from known_hosts" : "is not in known_hosts");
	return -1;
}

static const char *ssh_error(void)
{
	static char buf[256];
	char *msg = NULL;
	if (sftp_state.session)
		libssh2_session_last_error(sftp_state.session, &msg, NULL, 0);
	snprintf(buf, sizeof buf, "%s", msg && *msg ? msg : "SSH error");
	return buf;
}

/* Counts what goes through the socket: a pass over the files that moved no
 * byte and no file has nothing left to do but wait (see pump). */
static ssize_t counted(ssize_t n)
{
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	sftp_state.io_bytes += (uint64_t)n;
	sftp_state.io_ms = now_ms();
	return n;
}

static LIBSSH2_RECV_FUNC(counted_recv)
{
	(void)abstract;
	return counted(recv(socket, buffer, length, flags));
}

static LIBSSH2_SEND_FUNC(counted_send)
{
	(void)abstract;
	return counted(send(socket, buffer, length, flags));
}

static int make_remote_dir(char *err, size_t errlen);

/* In blocking mode: the handshake, the login, the first SFTP channel and the
 * remote directory; then non-blocking for the files. */
static int open_session(char *err, size_t errlen)
{
	uint64_t t0 = now_ms();
	if (tcp_connect(err, errlen) < 0)
		return -1;
	sftp_state.session = libssh2_session_init();
	libssh2_session_callback_set(sftp_state.session, LIBSSH2_CALLBACK_RECV, (void *)counted_recv);
	libssh2_session_callback_set(sftp_state.session, LIBSSH2_CALLBACK_SEND, (void *)counted_send);
	libssh2_session_set_blocking(sftp_state.session, 1);
	libssh2_session_set_timeout(sftp_state.session, sftp_state.timeout_ms);
	if (libssh2_session_handshake(sftp_state.session, sftp_state.sock)) {
		snprintf(err, errlen, "SSH handshake with %s:%d failed: %s", sftp_state.host, sftp_state.port, ssh_error());
		return -1;
	}
	if (check_host_key(err, errlen) < 0)
		return -1;
	int rc = sftp_state.key_data ? libssh2_userauth_publickey_frommemory(sftp_state.session, sftp_state.user, strlen(sftp_state.user), NULL, 0, sftp_state.key_data,
								    sftp_state.key_len, sftp_state.passphrase)
			    : libssh2_userauth_password(sftp_state.session, sftp_state.user, sftp_state.password ? sftp_state.password : "");
	if (rc) {
		snprintf(err, errlen, "SSH authentication as %s failed: %s", sftp_state.user, ssh_error());
		return -1;
	}
	if (!(sftp_state.sftp0 = libssh2_sftp_init(sftp_state.session))) {
		snprintf(err, errlen, "SFTP subsystem refused: %s", ssh_error());
		return -1;
	}
	if (make_remote_dir(err, errlen) < 0)
		return -1;
	libssh2_keepalive_config(sftp_state.session, 0, 15);
	libssh2_session_set_blocking(sftp_state.session, 0);
	char up[300];
	snprintf(up, sizeof up, "connected to %s:%d", sftp_state.host, sftp_state.port);
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
static bool sftp_why(LIBSSH2_SFTP *sftp, int rc, char *why, size_t len)
{
	if (rc != LIBSSH2_ERROR_SFTP_PROTOCOL) {
		snprintf(why, len, "%s (libssh2 error %d)", ssh_error(), rc);
		return false;
	}
	unsigned long fx = libssh2_sftp_last_error(sftp);
	snprintf(why, len, "%s (SFTP status %lu)", fx_name(fx), fx);
	return fx == LIBSSH2_FX_PERMISSION_DENIED || fx == LIBSSH2_FX_WRITE_PROTECT ||
	       fx == LIBSSH2_FX_NO_SPACE_ON_FILESYSTEM || fx == LIBSSH2_FX_QUOTA_EXCEEDED;
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
	snprintf(out, len, "%s/.%.*s.%s" PART_SUFFIX, sftp_state.remote, (int)n, name, id);
}

/* Directories of remote_path made or found at the session's start, in blocking
 * mode: once per session, not once per file. */
static int make_remote_dir(char *err, size_t errlen)
{
	LIBSSH2_SFTP_ATTRIBUTES a;
	if (libssh2_sftp_stat(sftp_state.sftp0, sftp_state.remote, &a) == 0)
		return 0;
	char path[1024];
	snprintf(path, sizeof path, "%s", sftp_state.remote);
	for (char *p = path + 1;; p++) {
		if (*p == '/' || !*p) {
			char c = *p;
			*p = '\0';
			if (libssh2_sftp_stat(sftp_state.sftp0, path, &a) != 0)
				libssh2_sftp_mkdir(sftp_state.sftp0, path, 0755);
			*p = c;
			if (!c)
				break;
		}
	}
	if (libssh2_session_last_errno(sftp_state.session) != LIBSSH2_ERROR_SFTP_PROTOCOL &&
	    libssh2_session_last_errno(sftp_state.session) != 0) {
		snprintf(err, errlen, "making %s: %s", sftp_state.remote, ssh_error());
		return -1;
	}
	return 0; /* a directory that could not be made shows in the first open */
}

/* ---- files in flight ----
 *
 * Each lane is an SFTP channel of its own on the one SSH session: libssh2 keeps
 * the state of an open, an fstat or a rename per SFTP channel, so one channel
 * has one of each in progress at a time, and one open per round trip would cap
 * a 100 ms link at 10 files/s. A lane holds two files: its writer (open, then
 * writes pipelined up to sftp_state.inflight bytes) and its finisher (the close and the
 * size check sent together, then the rename), so that the finishing of one
 * file overlaps the open and the writes of the next; the writer uses open,
 * fstat (to resume) and write, the finisher close, stat, rename and unlink, so
 * the two never need the same state of the channel. All lanes run in this
 * one thread, non-blocking.
 *
 * libssh2 has one outgoing packet buffer per session: a call that returned
 * EAGAIN with part of a packet still unsent must be called again, with the same
 * arguments, before any other call may send (another call would be refused, or
 * on the same channel would send its bytes in the middle of that packet). That
 * call's file is the owner (sftp_state.owner) until its call stops blocking outbound, and
 * only it is stepped meanwhile. */

enum stage {
	ST_OPEN,     /* writer: open the part */
	ST_RESUME,   /* writer: fstat of the part to go on from its size (a retry) */
	ST_WRITE,    /* writer: writes until every byte is acknowledged */
	ST_CHECK,    /* finisher: close and a stat (the size check), sent together */
	ST_RENAME,   /* finisher: the part becomes the final name */
	ST_OLD_STAT, /* finisher: the rename was refused: is there an old file? */
	ST_OLD_UNLINK,
	ST_RENAME_AGAIN,
	ST_ABORT,    /* a file failed while its handle is open: close it, then answer */
	ST_ABORT_UNLINK, /* and then remove its part (a write the server refused) */
};

enum op { OP_NONE, OP_OPEN, OP_FSTAT, OP_WRITE, OP_CLOSE, OP_RENAME, OP_STAT, OP_UNLINK };

struct file {
	struct job *job;
	enum stage stage;
	LIBSSH2_SFTP_HANDLE *h;
	char final[1400], part[1400];
	bool resume;              /* the part may hold bytes of an earlier attempt */
	int sessions;             /* sessions it was tried on */
	int server;               /* the server of the last of them (-1: none yet) */
	uint64_t acked;           /* bytes the server acknowledged (from the resume point) */
	char *buf;                /* bytes [acked, acked + have) of the file at buf + start */
	size_t cap, start, have;
	bool size_done, close_sent, close_done;
	int size_rc, close_rc;
	LIBSSH2_SFTP_ATTRIBUTES attrs;
	enum op sending;          /* the call that left part of a packet unsent */
	enum job_status fail;     /* ST_ABORT: the answer */
	bool remove_part;         /* ST_ABORT: the part may have a hole: remove it */
	char err[300];
	uint64_t progress_ms;
	struct file *next;
};

struct lane {
	LIBSSH2_SFTP *sftp;
	struct file *writer, *finisher;
	struct file *unlinker;    /* the file whose unlink is in progress (one per channel) */
};

enum step { STEP_WAIT, STEP_MOVED, STEP_BROKEN };

static struct {
	struct lane *lanes;
	int nlanes;                /* open lanes */
	bool lanes_refused;        /* the server refused another channel: go on with those open */
	bool opener_sending;       /* a lane's sftp_init left part of a packet unsent */
	struct file *queue, *queue_tail;
	struct file *owner;
	char broken[300];          /* why the session broke */
	bool draining;             /* failback: no new file on this session, which then closes */
	struct no_resume *no_resume; /* messages whose part must not be resumed */
} T;

/* A message whose part on the server may have a hole or the wrong size and
 * could not be removed: its next attempt writes the part whole (TRUNC) instead
 * of going on from the part's size. Kept until that attempt, in this process
 * only: a worker restarted in between resumes it (a crash on top of a refused
 * write and a failed removal). */
struct no_resume {
	char id[UCGW_ID_LEN + 1];
	struct no_resume *next;
};

static void forbid_resume(const char *id)
{
	struct no_resume *n = xcalloc(1, sizeof *n);
	snprintf(n->id, sizeof n->id, "%s", id);
	n->next = T.no_resume;
	T.no_resume = n;
}

/* true (and forgotten) when id's part must not be resumed */
static bool resume_forbidden(const char *id)
{
	for (struct no_resume **p = &T.no_resume; *p; p = &(*p)->next)
		if (!strcmp((*p)->id, id)) {
			struct no_resume *n = *p;
			*p = n->next;
			free(n);
			return true;
		}
	return false;
}

static bool blocked_out(void)
{
	return libssh2_session_block_directions(sftp_state.session) & LIBSSH2_SESSION_BLOCK_OUTBOUND;
}

/* After a call of f that returned rc: true when it would block. A call that
 * left part of a packet unsent makes f the owner. */
static bool would_block(struct file *f, enum op op, long rc)
{
	if (rc == LIBSSH2_ERROR_EAGAIN && blocked_out()) {
		f->sending = op;
		T.owner = f;
		return true;
	}
	if (f->sending == op) {
		f->sending = OP_NONE;
		if (T.owner == f)
			T.owner = NULL;
	}
	return rc == LIBSSH2_ERROR_EAGAIN;
}

/* A call may be made unless another call of the same file owns the session. */
static bool may_call(const struct file *f, enum op op) { return f->sending == OP_NONE || f->sending == op; }

static void post_progress(struct file *f, bool force)
{
	if (!force && now_ms() - f->progress_ms < 100)
		return;
	f->progress_ms = now_ms();
	struct event *e = xcalloc(1, sizeof *e);
	e->kind = EV_PROGRESS;
	e->job = f->job;
	e->n = f->acked;
	post(e);
}

static void free_file(struct file *f)
{
	free(f->buf);
	free(f);
}

static void finish(struct file *f, enum job_status st, const char *err)
{
	if (T.owner == f)
		T.owner = NULL;
	post_result(f->job, f->server, st, err && *err ? "%s" : NULL, err);
	free_file(f);
}

/* A failure of one call: an SFTP status ends the file (for good or retry); any
 * other error is the session's. */
static enum step file_failed(struct lane *l, struct file *f, long rc, const char *what)
{
	char why[200];
	bool permanent = sftp_why(l->sftp, (int)rc, why, sizeof why);
	if (rc != LIBSSH2_ERROR_SFTP_PROTOCOL) {
		snprintf(T.broken, sizeof T.broken, "%s %s: %s", what, f->part, why);
		return STEP_BROKEN;
	}
	snprintf(f->err, sizeof f->err, "%s %s: %s", what, f->part, why);
	f->fail = permanent ? JOB_PERMFAIL : JOB_RETRY;
	/* Writes go out pipelined: those after the refused one may have been
	 * written, past a hole, and a later attempt would resume from the
	 * part's size across it. A cut connection leaves no hole (the server
	 * writes in order what it received) and keeps its part to resume. */
	f->remove_part = f->stage == ST_WRITE;
	if (f->h) {
		f->stage = ST_ABORT;
		return STEP_MOVED;
	}
	if (l->writer == f)
		l->writer = NULL;
	else
		l->finisher = NULL;
	finish(f, f->fail, f->err);
	return STEP_MOVED;
}

static enum step step_open(struct lane *l, struct file *f)
{
	unsigned long flags = LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | (f->resume ? 0 : LIBSSH2_FXF_TRUNC);
	f->h = libssh2_sftp_open(l->sftp, f->part, flags, 0644);
	if (!f->h) {
		long rc = libssh2_session_last_errno(sftp_state.session);
		if (would_block(f, OP_OPEN, rc))
			return STEP_WAIT;
		return file_failed(l, f, rc, "cannot open");
	}
	would_block(f, OP_OPEN, 0);
	f->stage = f->resume ? ST_RESUME : ST_WRITE;
	return STEP_MOVED;
}

static enum step step_resume(struct lane *l, struct file *f)
{
	LIBSSH2_SFTP_ATTRIBUTES a;
	int rc = libssh2_sftp_fstat(f->h, &a);
	if (would_block(f, OP_FSTAT, rc))
		return STEP_WAIT;
	if (rc)
		return file_failed(l, f, rc, "cannot look at the size of");
	if ((a.flags & LIBSSH2_SFTP_ATTR_SIZE) && a.filesize <= f->job->size)
		f->acked = a.filesize; /* a transfer cut short: go on from there */
	libssh2_sftp_seek64(f->h, f->acked);
	f->stage = ST_WRITE;
	return STEP_MOVED;
}

/* Keep up to sftp_state.inflight bytes of the file in the buffer from the first byte
 * not acknowledged; moved down once the start passes the middle, so each byte
 * is copied at most once more. */
static int refill(struct file *f)
{
	uint64_t left = f->job->size - f->acked;
	if (!f->buf) {
		f->cap = left < 2 * sftp_state.inflight ? (size_t)left : 2 * sftp_state.inflight;
		f->buf = xmalloc(f->cap ? f->cap : 1);
		f->start = f->have = 0;
	}
	size_t want = left < sftp_state.inflight ? (size_t)left : sftp_state.inflight;
	if (f->have >= want || (f->have > sftp_state.inflight / 2 && want == sftp_state.inflight))
		return 0; /* full, or still more than half full: read in big pieces */
	if (f->start + want > f->cap) {
		memmove(f->buf, f->buf + f->start, f->have);
		f->start = 0;
	}
	while (f->have < want) {
		ssize_t n = pread(f->job->fd, f->buf + f->start + f->have, want - f->have,
				  (off_t)(f->acked + f->have));
		if (n <= 0) {
			snprintf(f->err, sizeof f->err, "reading the local file: %s", n < 0 ? strerror(errno) : "it shrank");
			return -1;
		}
		f->have += (size_t)n;
	}
	return 0;
}

static enum step step_write(struct lane *l, struct file *f)
{
	if (f->acked == f->job->size) {
		if (l->finisher)
			return STEP_WAIT;
		free(f->buf);
		f->buf = NULL;
		l->finisher = f;
		l->writer = NULL;
		f->stage = ST_CHECK;
		return STEP_MOVED;
	}
	if (f->sending == OP_NONE && refill(f) < 0) {
		f->fail = JOB_RETRY;
		f->stage = ST_ABORT;
		return STEP_MOVED;
	}
	ssize_t n = libssh2_sftp_write(f->h, f->buf + f->start, f->have);
	if (would_block(f, OP_WRITE, n))
		return STEP_WAIT;
	if (n < 0)
		return file_failed(l, f, n, "writing");
	f->acked += (uint64_t)n;
	f->start += (size_t)n;
	f->have -= (size_t)n;
	post_progress(f, false);
	return n > 0 ? STEP_MOVED : STEP_WAIT;
}

/* The close and the size check (a stat of the part) go out together, after
 * the last write was acknowledged: the server answers in order, so the size
 * is the one the closed file has, and the rename waits for both answers. A
 * stat by name, not an fstat: the close may see its answer (and free the
 * handle) before the size check has been asked for its own. */
static enum step step_check(struct lane *l, struct file *f)
{
	if (!f->close_done && may_call(f, OP_CLOSE)) {
		int rc = libssh2_sftp_close(f->h);
		f->close_sent = true;
		if (would_block(f, OP_CLOSE, rc)) {
			if (T.owner == f)
				return STEP_WAIT; /* the stat follows the close out */
		} else {
			f->h = NULL; /* freed by libssh2 whatever the answer */
			f->close_done = true;
			f->close_rc = rc;
			if (rc && rc != LIBSSH2_ERROR_SFTP_PROTOCOL)
				return file_failed(l, f, rc, "closing");
		}
	}
	if (!f->size_done && f->close_sent && may_call(f, OP_STAT)) {
		int rc = libssh2_sftp_stat(l->sftp, f->part, &f->attrs);
		if (!would_block(f, OP_STAT, rc)) {
			f->size_done = true;
			f->size_rc = rc;
			if (rc && rc != LIBSSH2_ERROR_SFTP_PROTOCOL)
				return file_failed(l, f, rc, "cannot check the size of");
		}
	}
	if (!f->size_done || !f->close_done)
		return STEP_WAIT; /* both answered: no request of this file is left for the next one's */
	if (f->close_rc)
		return file_failed(l, f, f->close_rc, "closing");
	if (f->size_rc)
		return file_failed(l, f, f->size_rc, "cannot check the size of");
	if (f->attrs.filesize != f->job->size) {
		snprintf(f->err, sizeof f->err, "%s has %llu bytes on the server, not %llu", f->part,
			 (unsigned long long)f->attrs.filesize, (unsigned long long)f->job->size);
		forbid_resume(f->job->id); /* the next attempt writes it whole */
		l->finisher = NULL;
		finish(f, JOB_RETRY, f->err);
		return STEP_MOVED;
	}
	f->stage = ST_RENAME;
	return STEP_MOVED;
}

static long rename_part(struct lane *l, struct file *f)
{
	const long flags = LIBSSH2_SFTP_RENAME_OVERWRITE | LIBSSH2_SFTP_RENAME_ATOMIC | LIBSSH2_SFTP_RENAME_NATIVE;
	return libssh2_sftp_rename_ex(l->sftp, f->part, (unsigned)strlen(f->part), f->final, (unsigned)strlen(f->final),
				      flags);
}

static enum step renamed(struct lane *l, struct file *f)
{
	l->finisher = NULL;
	finish(f, JOB_OK, NULL);
	return STEP_MOVED;
}

/* SFTP version 3 (OpenSSH) refuses to rename onto an existing file, the
 * overwrite flag is for later versions, and libssh2 1.10 cannot send
 * posix-rename@openssh.com. A target that exists is a file of that name
 * delivered before: often this very message, when a worker died after the
 * rename and before it could say ok. The newer file replaces it: the server
 * may find no file for a moment, but never half of one. When the target is not
 * there, the rename's own refusal is the answer (not the "no such file" of the
 * stat that looked for it). */
static enum step step_rename(struct lane *l, struct file *f)
{
	long rc;
	switch (f->stage) {
	case ST_RENAME:
		rc = rename_part(l, f);
		if (would_block(f, OP_RENAME, rc))
			return STEP_WAIT;
		if (rc == 0)
			return renamed(l, f);
		if (rc != LIBSSH2_ERROR_SFTP_PROTOCOL)
			return file_failed(l, f, rc, "renaming");
		f->fail = sftp_why(l->sftp, (int)rc, f->err, sizeof f->err) ? JOB_PERMFAIL : JOB_RETRY;
		f->stage = ST_OLD_STAT;
		return STEP_MOVED;
	case ST_OLD_STAT: {
		LIBSSH2_SFTP_ATTRIBUTES a;
		rc = libssh2_sftp_stat(l->sftp, f->final, &a);
		if (would_block(f, OP_STAT, rc))
			return STEP_WAIT;
		if (rc == 0) {
			f->stage = ST_OLD_UNLINK;
			return STEP_MOVED;
		}
		if (rc != LIBSSH2_ERROR_SFTP_PROTOCOL)
			return file_failed(l, f, rc, "looking for the old file to rename");
		char why[200];
		snprintf(why, sizeof why, "%s", f->err);
		snprintf(f->err, sizeof f->err, "renaming %s to %s: %s", f->part, f->final, why);
		l->finisher = NULL;
		finish(f, f->fail, f->err);
		return STEP_MOVED;
	}
	case ST_OLD_UNLINK:
		if (l->unlinker && l->unlinker != f)
			return STEP_WAIT; /* the writer removes its part */
		l->unlinker = f;
		rc = libssh2_sftp_unlink(l->sftp, f->final);
		if (would_block(f, OP_UNLINK, rc))
			return STEP_WAIT;
		l->unlinker = NULL;
		if (rc)
			return file_failed(l, f, rc, "removing the old file to rename");
		f->stage = ST_RENAME_AGAIN;
		return STEP_MOVED;
	default:
		rc = rename_part(l, f);
		if (would_block(f, OP_RENAME, rc))
			return STEP_WAIT;
		if (rc == 0)
			return renamed(l, f);
		return file_failed(l, f, rc, "renaming after removing the old file");
	}
}

static enum step step_abort(struct lane *l, struct file *f)
{
	if (f->stage == ST_ABORT) {
		int rc = libssh2_sftp_close(f->h);
		if (would_block(f, OP_CLOSE, rc))
			return STEP_WAIT;
		f->h = NULL;
		if (f->remove_part) {
			f->stage = ST_ABORT_UNLINK;
			return STEP_MOVED;
		}
	} else {
		if (l->unlinker && l->unlinker != f)
			return STEP_WAIT; /* the finisher removes an old file */
		l->unlinker = f;
		int rc = libssh2_sftp_unlink(l->sftp, f->part);
		if (would_block(f, OP_UNLINK, rc))
			return STEP_WAIT;
		l->unlinker = NULL;
		if (rc && rc != LIBSSH2_ERROR_SFTP_PROTOCOL)
			return file_failed(l, f, rc, "removing the part of a refused write");
		if (rc) {
			char why[200];
			size_t n = strlen(f->err);
			sftp_why(l->sftp, rc, why, sizeof why);
			snprintf(f->err + n, sizeof f->err - n, "; removing the part: %s", why);
			forbid_resume(f->job->id);
		}
	}
	if (l->writer == f)
		l->writer = NULL;
	else
		l->finisher = NULL;
	finish(f, f->fail, f->err);
	return STEP_MOVED;
}

static enum step step_file(struct lane *l, struct file *f)
{
	switch (f->stage) {
	case ST_OPEN: return step_open(l, f);
	case ST_RESUME: return step_resume(l, f);
	case ST_WRITE: return step_write(l, f);
	case ST_CHECK: return step_check(l, f);
	case ST_ABORT:
	case ST_ABORT_UNLINK: return step_abort(l, f);
	default: return step_rename(l, f);
	}
}

static struct lane *lane_of(const struct file *f)
{
	for (int i = 0; i < T.nlanes; i++)
		if (T.lanes[i].writer == f || T.lanes[i].finisher == f)
			return &T.lanes[i];
	return NULL;
}

/* One more SFTP channel, while files wait and every lane writes. A server that
 * refuses it (OpenSSH allows MaxSessions channels, 10 by default) leaves the
 * lanes open as they are. */
static enum step open_lane(void)
{
	LIBSSH2_SFTP *sftp = libssh2_sftp_init(sftp_state.session);
	if (!sftp) {
		int rc = libssh2_session_last_errno(sftp_state.session);
		if (rc == LIBSSH2_ERROR_EAGAIN) {
			T.opener_sending = blocked_out();
			return STEP_WAIT;
		}
		T.opener_sending = false;
		if (rc == LIBSSH2_ERROR_CHANNEL_FAILURE || rc == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED) {
			log_msg(LOG_LVL_WARN, "%s:%d refused SFTP channel %d (%s): %d files in flight", sftp_state.host, sftp_state.port,
				T.nlanes + 1, ssh_error(), T.nlanes);
			T.lanes_refused = true;
			return STEP_MOVED;
		}
		snprintf(T.broken, sizeof T.broken, "opening SFTP channel %d: %s", T.nlanes + 1, ssh_error());
		return STEP_BROKEN;
	}
	T.opener_sending = false;
	T.lanes[T.nlanes++].sftp = sftp;
	return STEP_MOVED;
}

static bool want_lane(void)
{
	if (!T.queue || T.lanes_refused || T.nlanes >= sftp_state.files_in_flight)
		return false;
	for (int i = 0; i < T.nlanes; i++)
		if (!T.lanes[i].writer)
			return false;
	return true;
}

static bool assign(void)
{
	bool moved = false;
	if (T.draining)
		return false;
	for (int i = 0; i < T.nlanes && T.queue; i++) {
		struct lane *l = &T.lanes[i];
		if (l->writer)
			continue;
		struct file *f = T.queue;
		T.queue = f->next;
		if (!T.queue)
			T.queue_tail = NULL;
		f->next = NULL;
		f->stage = ST_OPEN;
		f->sessions++;
		if (f->server >= 0 && (size_t)f->server != sftp_state.cur)
			f->resume = false; /* its part is the other server's business: start over here */
		f->server = (int)sftp_state.cur;
		l->writer = f;
		moved = true;
	}
	return moved;
}

/* One pass over what can move; STEP_BROKEN when the session broke. */
static enum step pass(void)
{
	bool moved = assign();
	enum step s;
	if (T.owner) {
		struct lane *l = lane_of(T.owner);
		return l ? step_file(l, T.owner) : STEP_BROKEN;
	}
	if (T.opener_sending || want_lane()) {
		if ((s = open_lane()) == STEP_BROKEN)
			return s;
		moved |= s == STEP_MOVED;
		if (T.opener_sending)
			return STEP_WAIT;
	}
	for (int i = 0; i < T.nlanes && !T.owner; i++) {
		struct lane *l = &T.lanes[i];
		for (int k = 0; k < 2 && !T.owner; k++) {
			struct file *f = k ? l->finisher : l->writer;
			if (!f)
				continue;
			if ((s = step_file(l, f)) == STEP_BROKEN)
				return s;
			moved |= s == STEP_MOVED;
		}
	}
	return moved ? STEP_MOVED : STEP_WAIT;
}

/* Passes until nothing moves: a call of one file may read the answers of
 * another, which then waits in libssh2's buffers, not in the socket. */
static bool pump(void)
{
	/* new jobs and a stop are taken between pumps: return now and then */
	for (uint64_t t0 = now_ms(); now_ms() - t0 < 50;) {
		uint64_t io = sftp_state.io_bytes;
		enum step s = pass();
		if (s == STEP_BROKEN)
			return false;
		if (s == STEP_WAIT && io == sftp_state.io_bytes)
			return true;
	}
	return true;
}
/* ---- the session's life ---- */

static void queue_front(struct file *f)
{
	f->next = T.queue;
	T.queue = f;
	if (!T.queue_tail)
		T.queue_tail = f;
}

/* Sessions a file may break before it is answered retry: two with one server
 * (the second resumes the part), one on each server of a list. */
static int sessions_max(void) { return sftp_state.nsrv > 2 ? (int)sftp_state.nsrv : 2; }

/* What a broken session had in flight: a file tried on fewer than
 * sessions_max() sessions goes again on the next (resuming its part on the
 * same server, starting over on another); one that broke that many is
 * answered retry with why. Nothing is answered when the worker stops: the
 * framework answers the jobs in hand. */
static void take_back(struct file *f, const char *why, bool stopping)
{
	if (f->h)
		libssh2_sftp_close_handle(f->h); /* the socket is shut: fails at once, frees the handle */
	f->h = NULL;
	if (f->remove_part && (stopping || f->sessions >= sessions_max()))
		forbid_resume(f->job->id); /* a refused write's part the broken session left */
	if (stopping) {
		free_file(f);
		return;
	}
	if (f->sessions >= sessions_max()) {
		finish(f, JOB_RETRY, why);
		return;
	}
	free(f->buf);
	f->buf = NULL;
	f->acked = 0;
	f->start = f->have = 0;
	f->size_done = f->close_sent = f->close_done = false;
	f->sending = OP_NONE;
	f->resume = !f->remove_part; /* unless a refused write's part is left */
	f->remove_part = false;
	queue_front(f);
}

static void drop_session(const char *why, bool stopping)
{
	pthread_mutex_lock(&sftp_state.lock);
	if (sftp_state.sock >= 0)
		shutdown(sftp_state.sock, SHUT_RDWR); /* every call below fails at once */
	pthread_mutex_unlock(&sftp_state.lock);
	if (sftp_state.session)
		libssh2_session_set_blocking(sftp_state.session, 1);
	for (int i = T.nlanes - 1; i >= 0; i--) {
		struct lane *l = &T.lanes[i];
		if (l->finisher)
			take_back(l->finisher, why, stopping);
		if (l->writer)
			take_back(l->writer, why, stopping);
		l->writer = l->finisher = l->unlinker = NULL;
		if (l->sftp != sftp_state.sftp0)
			libssh2_sftp_shutdown(l->sftp);
		l->sftp = NULL;
	}
	T.nlanes = 0;
	T.owner = NULL;
	T.opener_sending = T.lanes_refused = false;
	if (sftp_state.sftp0)
		libssh2_sftp_shutdown(sftp_state.sftp0);
	if (sftp_state.session) {
		libssh2_session_disconnect(sftp_state.session, "bye");
		libssh2_session_free(sftp_state.session);
	}
	worker_wire_sample(); /* the session's last bytes, for the link's byte budget */
	pthread_mutex_lock(&sftp_state.lock);
	if (sftp_state.sock >= 0)
		close(sftp_state.sock);
	sftp_state.sock = -1;
	pthread_mutex_unlock(&sftp_state.lock);
	sftp_state.sftp0 = NULL;
	sftp_state.session = NULL;
}

/* Jobs the loop handed over, into the thread's queue; false once stopping. */
static bool take_jobs(void)
{
	pthread_mutex_lock(&sftp_state.lock);
	struct qjob *q = sftp_state.jobs;
	sftp_state.jobs = sftp_state.jobs_tail = NULL;
	bool stop = sftp_state.stop;
	pthread_mutex_unlock(&sftp_state.lock);
	while (q) {
		struct qjob *next = q->next;
		struct file *f = xcalloc(1, sizeof *f);
		f->job = q->job;
		f->server = -1;
		const char *name = f->job->remote_name ? f->job->remote_name : f->job->id;
		snprintf(f->final, sizeof f->final, "%s/%s", sftp_state.remote, name);
		part_name(f->part, sizeof f->part, name, f->job->id);
		/* A first attempt has no part to resume: open it truncated, with no
		 * round trip to ask its size. A later one may (TRUNC is always safe,
		 * resuming only saves bytes). */
		f->resume = f->job->attempt > 0 && !resume_forbidden(f->job->id);
		if (T.queue_tail)
			T.queue_tail->next = f;
		else
			T.queue = f;
		T.queue_tail = f;
		free(q);
		q = next;
	}
	return !stop;
}

static void fail_queue(const char *why)
{
	while (T.queue) {
		struct file *f = T.queue;
		T.queue = f->next;
		post_result(f->job, -1, JOB_RETRY, "%s", why);
		free_file(f);
	}
	T.queue_tail = NULL;
}

static bool busy(void)
{
	for (int i = 0; i < T.nlanes; i++)
		if (T.lanes[i].writer || T.lanes[i].finisher)
			return true;
	return false;
}

static bool stopping(void)
{
	pthread_mutex_lock(&sftp_state.lock);
	bool stop = sftp_state.stop;
	pthread_mutex_unlock(&sftp_state.lock);
	return stop;
}

/* The files waiting for a lane wait for the ones in flight, which move: say so
 * each second, so that a long queue does not reach gateway.job_timeout_ms and
 * go out a second time by another way while this worker still has it. */
static void queue_progress(void)
{
	static uint64_t last;
	uint64_t now = now_ms();
	if (now - last < 1000 || sftp_state.io_ms < last)
		return;
	last = now;
	for (struct file *f = T.queue; f; f = f->next)
		post_progress(f, true);
}

/* Sleep until the loop wakes the thread, the socket can move, or ms passed. */
static void wait_for(int ms, short sock_events)
{
	struct pollfd p[2] = { { sftp_state.wake, POLLIN, 0 }, { sftp_state.sock, sock_events, 0 } };
	if (poll(p, sock_events && sftp_state.sock >= 0 ? 2 : 1, ms) > 0 && (p[0].revents & POLLIN)) {
		uint64_t n;
		if (read(sftp_state.wake, &n, sizeof n) < 0 && errno != EAGAIN)
			log_msg(LOG_LVL_WARN, "sftp: reading the wake-up: %s", strerror(errno));
	}
}

/* While files are in flight: wait for the socket, and call the session dead
 * when nothing came or went for the timeout. */
static bool wait_busy(void)
{
	uint64_t now = now_ms(), quiet = now - sftp_state.io_ms;
	if (quiet >= (uint64_t)sftp_state.timeout_ms) {
		snprintf(T.broken, sizeof T.broken, "no answer from %s:%d in %.1f s", sftp_state.host, sftp_state.port,
			 (double)sftp_state.timeout_ms / 1000);
		return false;
	}
	short ev = blocked_out() ? POLLOUT : 0;
	if (!T.owner && !T.opener_sending)
		ev |= POLLIN;
	wait_for((int)((uint64_t)sftp_state.timeout_ms - quiet), ev);
	return true;
}

/* Server i's host and port for the next session. */
static void use_server(size_t i)
{
	sftp_state.cur = i;
	snprintf(sftp_state.host, sizeof sftp_state.host, "%s", sftp_state.srv[i].host);
	sftp_state.port = sftp_state.srv[i].port;
}

/* The session broke: its server is down, and the next session goes to the
 * next server of the list (failover). */
static void session_lost(const char *why)
{
	char w[300];
	snprintf(w, sizeof w, "%s", why);
	drop_session(w, false);
	post_health(false, 0, w);
	if (stopping())
		return;
	post_server(sftp_state.cur, false, 0, w);
	if (sftp_state.nsrv > 1) {
		/* a failback waiting for this session's files goes ahead now */
		use_server(T.draining ? 0 : (sftp_state.cur + 1) % sftp_state.nsrv);
		T.draining = false;
		log_msg(LOG_LVL_WARN, "sftp: next session to server %zu of %zu (%s:%d)", sftp_state.cur + 1, sftp_state.nsrv,
			sftp_state.host, sftp_state.port);
	}
}

/* A session to the current server, or to the next ones in turn: false (err
 * says why) when none of them opened one. */
static bool connect_some(char *err, size_t errlen)
{
	char last[300] = "";
	for (size_t k = 0; k < sftp_state.nsrv; k++) {
		uint64_t t0 = now_ms();
		if (open_session(err, errlen) == 0) {
			post_server(sftp_state.cur, true, (now_ms() - t0) * 1000, NULL);
			return true;
		}
		drop_session(err, false);
		if (stopping())
			return false;
		post_server(sftp_state.cur, false, 0, err);
		snprintf(last, sizeof last, "%s", err);
		if (sftp_state.nsrv == 1)
			break;
		log_msg(LOG_LVL_WARN, "sftp: server %zu of %zu: %s", sftp_state.cur + 1, sftp_state.nsrv, err);
		use_server((sftp_state.cur + 1) % sftp_state.nsrv);
	}
	if (sftp_state.nsrv > 1)
		snprintf(err, errlen, "none of the %zu servers of sftp.host took a session (the last: %s)", sftp_state.nsrv, last);
	return false;
}

/* The loop asked for the first server again: at once when no session is
 * open, else once the files in flight are done (no new one starts meanwhile).
 * true when the next session is to be opened now. */
static bool take_failback(void)
{
	pthread_mutex_lock(&sftp_state.lock);
	bool asked = sftp_state.failback;
	sftp_state.failback = false;
	pthread_mutex_unlock(&sftp_state.lock);
	if (asked && !sftp_state.session) {
		use_server(0);
		return true;
	}
	if (asked && sftp_state.cur != 0)
		T.draining = true;
	if (T.draining && !busy()) {
		T.draining = false;
		drop_session("failback to the first server", false);
		use_server(0);
		return true;
	}
	return false;
}

/* Idle: keep the session alive, or find out it dropped. */
static void keep_alive(void)
{
	int next = 15;
	int rc = libssh2_keepalive_send(sftp_state.session, &next);
	if (rc && rc != LIBSSH2_ERROR_EAGAIN) {
		session_lost("the SSH session dropped");
		return;
	}
	wait_for(next > 5 ? 5000 : next * 1000, 0);
}

static void *run(void *arg)
{
	(void)arg;
	char err[300];
	T.lanes = xcalloc((size_t)sftp_state.files_in_flight, sizeof *T.lanes);
	bool retry_now = true; /* the first connect is at once; then one try each 5 s while nothing waits */
	use_server(0);
	while (take_jobs()) {
		if (take_failback())
			retry_now = true;
		if (!sftp_state.session) {
			if (!T.queue && !retry_now) {
				wait_for(5000, 0);
				retry_now = true;
				continue;
			}
			retry_now = false;
			if (!connect_some(err, sizeof err)) {
				post_health(false, 0, err);
				fail_queue(err);
				continue;
			}
			T.lanes[0].sftp = sftp_state.sftp0;
			T.nlanes = 1;
			sftp_state.io_ms = now_ms();
		}
		if (!pump() || (busy() && !wait_busy())) {
			if (!stopping())
				log_msg(LOG_LVL_WARN, "sftp: %s; connecting again", T.broken);
			session_lost(T.broken);
			continue;
		}
		queue_progress();
		if (!busy() && !T.queue)
			keep_alive();
	}
	drop_session("the worker is stopping", true);
	while (T.queue) {
		struct file *f = T.queue;
		T.queue = f->next;
		free_file(f);
	}
	free(T.lanes);
	return NULL;
}
/* ---- the worker ---- */

static void wake_thread(void)
{
	uint64_t one = 1;
	if (write(sftp_state.wake, &one, sizeof one) < 0 && errno != EAGAIN)
		log_msg(LOG_LVL_WARN, "sftp: waking the thread: %s", strerror(errno));
}

static void sftp_submit(struct job *j)
{
	if (j->fd < 0) {
		worker_result(j, JOB_PERMFAIL, 0, "the sftp worker carries files only");
		return;
	}
	struct qjob *q = xcalloc(1, sizeof *q);
	q->job = j;
	pthread_mutex_lock(&sftp_state.lock);
	if (sftp_state.jobs_tail)
		sftp_state.jobs_tail->next = q;
	else
		sftp_state.jobs = q;
	sftp_state.jobs_tail = q;
	pthread_mutex_unlock(&sftp_state.lock);
	wake_thread();
}

static char *opt(const char *s) { return s ? xstrdup(s) : NULL; }

/* From the loop, so after the framework has installed the sandbox: the first
 * connection's handshake, data from the server, is parsed under the filter like
 * every later one. */
static void start_thread(uv_timer_t *t)
{
	if (sftp_state.stop)
		return;
	int rc = pthread_create(&sftp_state.thread, NULL, run, NULL);
	if (rc) {
		log_msg(LOG_LVL_ERR, "cannot start the SFTP thread: %s", strerror(rc));
		raise(SIGTERM); /* stop, answering the jobs in hand retry; the supervisor starts the worker again */
		return;
	}
	sftp_state.started = true;
}

/* Failback (the loop decides, the thread moves once its files are done) and
 * the per-server report. */
static void servers_tick(uv_timer_t *t)
{
	(void)t;
	if (servers_failback_due()) {
		servers_failback();
		pthread_mutex_lock(&sftp_state.lock);
		sftp_state.failback = true;
		pthread_mutex_unlock(&sftp_state.lock);
		wake_thread();
	}
	servers_report(false);
}

static int sftp_init(uv_loop_t *loop, const struct cfg_section *cfg, char *err, size_t errlen)
{
	if (servers_init(cfg, "host", err, errlen) < 0)
		return UCGW_EXIT_CONFIG;
	if (!servers_failover()) {
		snprintf(err, errlen, "sftp.servers_policy: spread is not supported by sftp, which keeps one SSH session "
				      "at a time; use failover");
		return UCGW_EXIT_CONFIG;
	}
	sftp_state.nsrv = servers_count();
	for (size_t i = 0; i < sftp_state.nsrv; i++)
		if (servers_host_port(servers_url(i), (int)cfg_int(cfg, "port"), "sftp.host", sftp_state.srv[i].host,
				      sizeof sftp_state.srv[i].host, &sftp_state.srv[i].port, err, errlen) < 0)
			return UCGW_EXIT_CONFIG;
	snprintf(sftp_state.user, sizeof sftp_state.user, "%s", cfg_str(cfg, "username"));
	snprintf(sftp_state.remote, sizeof sftp_state.remote, "%s", cfg_str(cfg, "remote_path"));
	sftp_state.password = opt(cfg_str(cfg, "password"));
	sftp_state.key_file = opt(cfg_str(cfg, "key_file"));
	sftp_state.passphrase = opt(cfg_str(cfg, "key_passphrase"));
	sftp_state.known_hosts = opt(cfg_str(cfg, "known_hosts"));
	sftp_state.fingerprint = opt(cfg_str(cfg, "host_key_fingerprint"));
	/* OpenSSH gives an SFTP channel a window of 2 MiB and adjusts it once half
	 * is used: with more than 512 KiB of writes in flight, a small request (an
	 * fstat, a rename) could find the window too narrow, which libssh2 1.10
	 * takes for an error. */
	sftp_state.inflight = (size_t)cfg_int(cfg, "buffer_bytes");
	if (sftp_state.inflight > MAX_INFLIGHT)
		sftp_state.inflight = MAX_INFLIGHT;
	sftp_state.files_in_flight = (int)cfg_int(cfg, "files_in_flight");
	sftp_state.timeout_ms = (long)(cfg_num(cfg, "timeout") * 1000);
	if (!sftp_state.key_file && !sftp_state.password) {
		snprintf(err, errlen, "sftp: give key_file or password (or password_file)");
		return UCGW_EXIT_CONFIG;
	}
	const char *why;
	sftp_state.key_data = worker_file("key_file", &sftp_state.key_len, &why);
	if (why) {
		snprintf(err, errlen, "sftp.key_file: %s", why);
		return UCGW_EXIT_CONFIG;
	}
	sftp_state.kh_data = worker_file("known_hosts", &sftp_state.kh_len, &sftp_state.kh_why);
	if (!sftp_state.fingerprint && !sftp_state.kh_data) {
		snprintf(err, errlen, "sftp: no way to trust the server: known_hosts %s is not readable (%s) and no "
				      "host_key_fingerprint is pinned", sftp_state.known_hosts ? sftp_state.known_hosts : "(unset)",
			 sftp_state.kh_why ? sftp_state.kh_why : "unset");
		return UCGW_EXIT_CONFIG;
	}
	if (libssh2_init(0)) {
		snprintf(err, errlen, "libssh2_init failed");
		return UCGW_EXIT_CONFIG;
	}
	if ((sftp_state.wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
		snprintf(err, errlen, "cannot make an eventfd: %s", strerror(errno));
		return UCGW_EXIT_CONFIG;
	}
	uv_async_init(loop, &sftp_state.async, on_events);
	worker_health(false, 0, "connecting to %s:%d", sftp_state.srv[0].host, sftp_state.srv[0].port);
	uv_timer_init(loop, &sftp_state.servers_tick);
	uv_timer_start(&sftp_state.servers_tick, servers_tick, 1000, 1000);
	uv_timer_init(loop, &sftp_state.start);
	uv_timer_start(&sftp_state.start, start_thread, 0, 0);
	return 0;
}

/* The thread may be in the middle of a file, using its job (and the job's fd):
 * it must be gone before the framework answers and frees the jobs in hand.
 * Shutting its socket down breaks whatever it waits for (a connect, a reply, a
 * full send buffer); the file it was sending fails `retry` and its part resumes
 * next time. What it posted is answered here, so a file it finished is `ok`. */
static void sftp_shutdown(void)
{
	uv_timer_stop(&sftp_state.servers_tick);
	pthread_mutex_lock(&sftp_state.lock);
	sftp_state.stop = true;
	if (sftp_state.sock >= 0)
		shutdown(sftp_state.sock, SHUT_RDWR);
	pthread_mutex_unlock(&sftp_state.lock);
	wake_thread();
	if (sftp_state.started)
		pthread_join(sftp_state.thread, NULL);
	on_events(&sftp_state.async);
	/* jobs it never took: the framework answers them retry */
	for (struct qjob *q = sftp_state.jobs, *next; q; q = next) {
		next = q->next;
		free(q);
	}
	sftp_state.jobs = sftp_state.jobs_tail = NULL;
}

static const struct worker_ops sftp_ops = {
	.name = "sftp",
	.init = sftp_init,
	.submit = sftp_submit,
	.shutdown = sftp_shutdown,
};

WORKER_MAIN(sftp_ops)
