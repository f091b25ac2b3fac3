/*
 * netrunner-shepherd: one small process that watches one child for its owner.
 *
 * It runs in one of two roles, chosen by argv[1]:
 *
 *   --fork-server  fd 3 is a SOCK_SEQPACKET socket to the owning Python.
 *                  Each FS_ADOPT datagram carries one end of a fresh
 *                  socketpair; the server forks, and the new process becomes
 *                  the shepherd for that socket.  The server keeps no state
 *                  per child beyond the pids of its shepherds, reaps them,
 *                  and (as a subreaper) kills whatever a dead shepherd left
 *                  behind.
 *   --shepherd     fd 3 is the stream socket to the owner (no fork server).
 *
 * A shepherd reads one OP_SPAWN request, forks the child into its own process
 * group, passes the owner's pipe ends back with SCM_RIGHTS once the child has
 * exec'd, and waits on the owner socket, a SIGCHLD self-pipe and (until the
 * exec) the child's error pipe together: a child that hangs before its exec
 * (a frozen cgroup, a hung filesystem) never keeps it from its owner.  When
 * the child exits it kills every descendant still running, reaps them, reports
 * OP_EXITED with the raw wait status and rusage, and exits.  When the owner
 * goes away (EOF, error, or a frame it cannot understand) it stops the child:
 * SIGTERM (then SIGCONT) to the group, up to kill_timeout, then SIGKILL,
 * with every wait bounded.  Frame layout and numbers: protocol.h, generated from Python.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "protocol.h"

#define OWNER_FD 3
/* fds one OP_SPAWN may carry: the kernel's SCM_MAX_FD, what one sendmsg
 * can pass (three stdio slots, FIELD_PASS_FD's and the cwd). */
#define MAX_FDS 253
#define MAX_PASS_FDS (MAX_FDS - 4)
#define MAX_RLIMITS 32
#define MAX_GROUPS 65536 /* NGROUPS_MAX on Linux */
#define SEND_BOUND_MS 5000     /* a wedged owner cannot block a report longer */
#define REQUEST_BOUND_MS 60000 /* an owner that never sends its request */
#define MAX_CGROUP_PATH 4000   /* a leaf path, with room for "/<file>" in 4096 */

/* ---------------------------------------------------------------- basics */

static int sigchld_pipe[2] = {-1, -1};

static void complain(const char *what) {
    char line[256];
    int saved = errno;
    int n = snprintf(line, sizeof line, "netrunner-shepherd[%ld]: %s: %s\n",
                     (long)getpid(), what, strerror(saved));
    if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* nowhere left to complain to */
    }
    errno = saved;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ms_until(int64_t deadline) {
    int64_t left = deadline - now_ms();
    if (left < 0) return 0;
    return left > 60000 ? 60000 : (int)left;
}

static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get_u64(const uint8_t *p) {
    return (uint64_t)get_u32(p) | ((uint64_t)get_u32(p + 4) << 32);
}

static void close_fd(int *fd) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

/* fork() without the atfork machinery.  Server and shepherd are
 * single-threaded and register no handlers, so there is nothing for fork()
 * to run; glibc's _Fork (2.34+) skips resetting malloc and stdio locks in
 * the child, which would otherwise write (and so copy) a few pages of libc
 * data per fork. */
static pid_t plain_fork(void) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    return _Fork();
#else
    return fork();
#endif
}

static void on_sigchld(int sig) {
    int saved = errno;
    (void)sig;
    if (write(sigchld_pipe[1], "c", 1) < 0) {
        /* pipe full: a wake-up is already pending */
    }
    errno = saved;
}

/* SIGCHLD becomes a readable byte on sigchld_pipe; SIGPIPE is ignored so a
 * vanished owner shows up as EPIPE (owner loss), never as our death. */
/* Signals that would kill us by default and are worth a graceful answer:
 * a shepherd stops its child (as STOP with kill_timeout) and reports; the
 * fork server ignores them (its shepherds go on; owner loss is its end). */
static const int stop_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};
/* Signals that would kill us by default and mean nothing to us: a child
 * that signals its parent (`kill -USR1 $PPID`, a daemon's readiness
 * signal) reaches its shepherd, which must not die of it (the child would
 * go with it).  Ignored; the child gets them back at their default. */
static const int stray_signals[] = {SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGXCPU, SIGXFSZ};
static volatile sig_atomic_t stop_requested = 0;

static void on_stop_signal(int sig) {
    stop_requested = sig;
    on_sigchld(sig); /* the same wake-up */
}

static int install_signals(int stop_handler) {
    struct sigaction sa;
    sigset_t empty;
    if (pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK) < 0) { complain("pipe2"); return -1; }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGCHLD, &sa, NULL) < 0) { complain("sigaction SIGCHLD"); return -1; }
    sa.sa_handler = stop_handler ? on_stop_signal : SIG_IGN;
    sa.sa_flags = SA_RESTART;
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++) {
        if (sigaction(stop_signals[i], &sa, NULL) < 0) { complain("sigaction"); return -1; }
    }
    sa.sa_handler = SIG_IGN;
    sa.sa_flags = 0;
    if (sigaction(SIGPIPE, &sa, NULL) < 0) { complain("sigaction SIGPIPE"); return -1; }
    for (size_t i = 0; i < sizeof stray_signals / sizeof stray_signals[0]; i++) {
        if (sigaction(stray_signals[i], &sa, NULL) < 0) { complain("sigaction"); return -1; }
    }
    sigemptyset(&empty);
    if (sigprocmask(SIG_SETMASK, &empty, NULL) < 0) { complain("sigprocmask"); return -1; }
    return 0;
}

static void drain_sigchld_pipe(void) {
    char buf[64];
    while (read(sigchld_pipe[0], buf, sizeof buf) > 0) {
    }
}

/* Wait until SIGCHLD arrives or the deadline passes. */
static void wait_sigchld(int64_t deadline) {
    struct pollfd p = {.fd = sigchld_pipe[0], .events = POLLIN};
    if (poll(&p, 1, ms_until(deadline)) > 0) drain_sigchld_pipe();
}

/* ----------------------------------------------------- descendants (Linux) */

/* Our direct children, from /proc: with PR_SET_CHILD_SUBREAPER these include
 * every descendant whose own parent died.  Returns the count (<= max). */
static int list_children(pid_t *out, int max) {
    char path[64], buf[4096];
    int n = 0;
    snprintf(path, sizeof path, "/proc/self/task/%ld/children", (long)getpid());
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t len;
    do len = read(fd, buf, sizeof buf - 1); while (len < 0 && errno == EINTR);
    close(fd);
    if (len <= 0) return 0;
    buf[len] = '\0';
    for (char *p = buf; *p && n < max;) {
        char *end;
        long pid = strtol(p, &end, 10);
        /* Each entry is "%d ": one cut short by the end of our buffer (the
         * kernel's may be larger, e.g. 64 KiB pages) is some other pid. */
        if (end == p || (*end != ' ' && *end != '\n')) break;
        if (pid > 1) out[n++] = (pid_t)pid; /* never kill(-1, ...) */
        p = end;
    }
    return n;
}

/* Signal a process we have not reaped (so its pid cannot be reused) and the
 * group it leads, if it leads one. */
static void signal_tree_member(pid_t pid, int sig) {
    kill(-pid, sig);
    kill(pid, sig);
}

/* ------------------------------------------------------------ owner I/O */

struct inbuf {
    uint8_t *buf;
    size_t len, cap;
    int fds[MAX_FDS];
    int nfds;
};

static void inbuf_close_fds(struct inbuf *in) {
    for (int i = 0; i < in->nfds; i++) close(in->fds[i]);
    in->nfds = 0;
}

/* One non-blocking recvmsg into the carry buffer.
 * Returns >0 bytes read, 0 on EOF, -1 on error or EAGAIN (errno says). */
/* Room for a 64 KiB read at the end of the buffer. */
static int inbuf_reserve(struct inbuf *in) {
    if (in->cap - in->len >= 65536) return 0;
    size_t cap = in->cap ? in->cap * 2 : 65536;
    while (cap - in->len < 65536) cap *= 2;
    uint8_t *grown = realloc(in->buf, cap);
    if (!grown) { errno = ENOMEM; return -1; }
    in->buf = grown;
    in->cap = cap;
    return 0;
}

static ssize_t inbuf_fill(struct inbuf *in, int sock) {
    if (inbuf_reserve(in) < 0) return -1;
    union {
        char raw[CMSG_SPACE(sizeof(int) * MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = in->buf + in->len, .iov_len = in->cap - in->len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = control.raw, .msg_controllen = sizeof control.raw};
    ssize_t n;
    do n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT); while (n < 0 && errno == EINTR);
    if (n < 0) return -1;
    int over = 0; /* more fds than a request can use, over several sends */
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *fds = (int *)(void *)CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
            if (in->nfds < MAX_FDS) in->fds[in->nfds++] = fds[i];
            else { close(fds[i]); over = 1; }
        }
    }
    if ((msg.msg_flags & MSG_CTRUNC) || over) { errno = EPROTO; return -1; }
    in->len += (size_t)n;
    return n;
}

/* 1 and the frame when a whole one is at the front, 0 when more bytes are
 * needed, -1 when the header is invalid. */
static int inbuf_frame(const struct inbuf *in, uint16_t *op, const uint8_t **payload, uint32_t *len) {
    if (in->len < NR_HEADER_SIZE) return 0;
    uint32_t plen = get_u32(in->buf);
    if (plen > NR_MAX_PAYLOAD || get_u16(in->buf + 6) != 0) return -1;
    if (in->len < NR_HEADER_SIZE + (size_t)plen) return 0;
    *op = get_u16(in->buf + 4);
    *payload = in->buf + NR_HEADER_SIZE;
    *len = plen;
    return 1;
}

static void inbuf_consume(struct inbuf *in, uint32_t payload_len) {
    size_t used = NR_HEADER_SIZE + (size_t)payload_len;
    memmove(in->buf, in->buf + used, in->len - used);
    in->len -= used;
}

/* Send one frame, with optional fds, within SEND_BOUND_MS.  A partial write
 * continues from where it stopped; the fds ride on the first byte. */
static int send_frame(int sock, uint16_t op, const uint8_t *payload, uint32_t len,
                      const int *fds, int nfds) {
    uint8_t header[NR_HEADER_SIZE];
    put_u32(header, len);
    put_u16(header + 4, op);
    put_u16(header + 6, 0);
    size_t total = sizeof header + len, sent = 0;
    int64_t deadline = now_ms() + SEND_BOUND_MS;
    union {
        char raw[CMSG_SPACE(sizeof(int) * MAX_FDS)];
        struct cmsghdr align;
    } control;
    while (sent < total) {
        struct iovec iov[2];
        int niov = 0;
        if (sent < sizeof header) {
            iov[niov++] = (struct iovec){header + sent, sizeof header - sent};
            if (len) iov[niov++] = (struct iovec){(void *)payload, len};
        } else {
            iov[niov++] = (struct iovec){(void *)(payload + (sent - sizeof header)), total - sent};
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)niov};
        if (sent == 0 && nfds > 0) {
            memset(&control, 0, sizeof control);
            msg.msg_control = control.raw;
            msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
            memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
        }
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) { sent += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = sock, .events = POLLOUT};
            if (ms_until(deadline) == 0) { errno = ETIMEDOUT; return -1; }
            poll(&p, 1, ms_until(deadline));
            continue;
        }
        return -1;
    }
    return 0;
}

/* A report that cannot reach an owner that is gone (EPIPE, ECONNRESET) is
 * nobody's news: the child is stopped and reaped all the same, and a line
 * on the dead owner's stderr would only be noise.  Anything else is said. */
static void complain_send(const char *what) {
    if (errno != EPIPE && errno != ECONNRESET) complain(what);
}

static void send_spawn_failed(int sock, uint32_t stage, int err) {
    uint8_t p[8];
    put_u32(p, stage);
    put_u32(p + 4, (uint32_t)err);
    send_frame(sock, NR_OP_SPAWN_FAILED, p, sizeof p, NULL, 0);
}

/* -------------------------------------------------------------- request */

struct strv {
    char **v;
    size_t n, cap;
};

struct request {
    struct strv argv, env, exec;
    char *cwd;
    int want_cwd_fd; /* FIELD_CWD_FD: the last fd sent with the request is the owner's cwd */
    int cwd_fd;      /* that fd once taken (-1: none); fchdir before chdir(cwd) */
    uint32_t mode[3];
    uint32_t kill_timeout_ms;
    int umask; /* -1: keep ours */
    int pty;   /* a pseudo-terminal instead of the stdio modes */
    int no_echo; /* that terminal starts with ECHO off */
    struct winsize winsize;
    int nrlimits;
    struct { int resource; struct rlimit limit; } rlimits[MAX_RLIMITS];
    char *cgroup;          /* leaf directory to create, or NULL */
    struct strv cgroup_set; /* "file=value" */
    /* Credentials for the child; each set only when its field came. */
    int set_uid, set_gid, set_groups, no_new_privs;
    int set_nice;
    int32_t nice; /* added to the child's niceness */
    uid_t uid;
    gid_t gid;
    gid_t *groups; /* malloc'd, ngroups entries (at least one slot) */
    size_t ngroups;
    /* FIELD_PASS_FD: the fds (in the order they came, after the stdio ones)
     * and the number each gets in the child; -1 until taken from the inbuf. */
    int new_session; /* FIELD_NEW_SESSION: setsid() instead of setpgid(0, 0) */
    int npass;
    int pass_fd[MAX_PASS_FDS];
    int pass_target[MAX_PASS_FDS];
};

static int strv_push(struct strv *s, const uint8_t *data, uint32_t len) {
    if (memchr(data, 0, len)) return -1;
    if (s->n + 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        char **grown = realloc(s->v, cap * sizeof *grown);
        if (!grown) return -1;
        s->v = grown;
        s->cap = cap;
    }
    char *copy = malloc((size_t)len + 1);
    if (!copy) return -1;
    memcpy(copy, data, len);
    copy[len] = '\0';
    s->v[s->n++] = copy;
    s->v[s->n] = NULL;
    return 0;
}

static void strv_free(struct strv *s) {
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static void request_free(struct request *rq) {
    strv_free(&rq->argv);
    strv_free(&rq->env);
    strv_free(&rq->exec);
    free(rq->cwd);
    rq->cwd = NULL;
    close_fd(&rq->cwd_fd);
    for (int i = 0; i < rq->npass; i++) close_fd(&rq->pass_fd[i]);
    free(rq->cgroup);
    rq->cgroup = NULL;
    strv_free(&rq->cgroup_set);
    free(rq->groups);
    rq->groups = NULL;
}

/* ---------------------------------------------------- cgroup names */

/* A controller interface file ("memory.max", "pids.max", "hugetlb.2MB.max"):
 * the only names a CGROUP_SET may write.  Why a list: cgroup.procs=0 would
 * move the shepherd itself into the leaf (and cgroup.kill then kills it),
 * cgroup.freeze=1 would wedge the child, cgroup.subtree_control would
 * reshape the tree, and a name with "/" or ".." could leave the leaf. */
static int controller_file(const uint8_t *name, size_t len) {
    static const char *const controllers[] = {"memory", "pids", "cpu", "io", "cpuset", "hugetlb"};
    for (size_t i = 0; i < len; i++) {
        uint8_t c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.'))
            return 0;
    }
    for (size_t i = 0; i < sizeof controllers / sizeof controllers[0]; i++) {
        size_t n = strlen(controllers[i]);
        if (len > n + 1 && memcmp(name, controllers[i], n) == 0 && name[n] == '.') return 1;
    }
    return 0;
}

/* An absolute path with no empty, "." or ".." component (so no trailing
 * "/" either), short enough for every "<leaf>/<file>" we build. */
static int clean_absolute(const char *path) {
    if (path[0] != '/' || strlen(path) > MAX_CGROUP_PATH) return 0;
    for (const char *p = path + 1;;) {
        const char *end = strchrnul(p, '/');
        size_t n = (size_t)(end - p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) return 0;
        if (*end == '\0') return 1;
        p = end + 1;
    }
}

/* mountinfo writes space, tab, newline and backslash as \ooo (octal). */
static void unescape_octal(char *s) {
    char *out = s;
    for (const char *in = s; *in;) {
        if (in[0] == '\\' && in[1] >= '0' && in[1] <= '3' && in[2] >= '0' && in[2] <= '7' && in[3] >= '0' &&
            in[3] <= '7') {
            *out++ = (char)(((in[1] - '0') << 6) | ((in[2] - '0') << 3) | (in[3] - '0'));
            in += 4;
        } else {
            *out++ = *in++;
        }
    }
    *out = '\0';
}

/* Is path a directory strictly below the cgroup2 mount?  The mount is the
 * first cgroup2 line of our own /proc/self/mountinfo (as Python's
 * _cgroup.mount_point finds it): we never trust the owner to say where the
 * cgroup tree is, since FIELD_CGROUP is mkdir'ed, written and rmdir'ed. */
static int under_cgroup2_mount(const char *path) {
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) { complain("open /proc/self/mountinfo"); return 0; }
    char *line = NULL;
    size_t size = 0;
    int inside = 0;
    while (getline(&line, &size, f) > 0) {
        /* "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw" */
        char *sep = strstr(line, " - ");
        if (!sep || strncmp(sep + 3, "cgroup2 ", 8) != 0) continue;
        *sep = '\0';
        char *mount = line;
        for (int i = 0; i < 4 && mount; i++) {
            mount = strchr(mount, ' ');
            if (mount) mount++;
        }
        if (!mount) break; /* a malformed line: refuse */
        char *end = strchr(mount, ' ');
        if (end) *end = '\0';
        unescape_octal(mount);
        size_t n = strlen(mount);
        while (n > 0 && mount[n - 1] == '/') n--; /* "/" itself: every path is below */
        inside = strncmp(path, mount, n) == 0 && path[n] == '/' && path[n + 1] != '\0';
        break;
    }
    free(line);
    fclose(f);
    return inside;
}

/* Decode the OP_SPAWN payload (a run of u16 tag, u32 length, value). */
static int parse_request(const uint8_t *p, uint32_t len, struct request *rq) {
    uint32_t off = 0;
    rq->kill_timeout_ms = NR_DEFAULT_KILL_TIMEOUT_MS;
    rq->umask = -1;
    while (off < len) {
        if (len - off < 6) return -1;
        uint16_t tag = get_u16(p + off);
        uint32_t flen = get_u32(p + off + 2);
        const uint8_t *v = p + off + 6;
        if (flen > len - off - 6) return -1;
        off += 6 + flen;
        switch (tag) {
        case NR_FIELD_ARGV: if (strv_push(&rq->argv, v, flen) < 0) return -1; break;
        case NR_FIELD_ENV: if (strv_push(&rq->env, v, flen) < 0) return -1; break;
        case NR_FIELD_EXEC: if (strv_push(&rq->exec, v, flen) < 0) return -1; break;
        case NR_FIELD_CWD: {
            struct strv one = {0};
            if (rq->cwd || strv_push(&one, v, flen) < 0) { strv_free(&one); return -1; }
            rq->cwd = one.v[0];
            free(one.v);
            break;
        }
        case NR_FIELD_CWD_FD:
            if (flen != 0 || rq->want_cwd_fd) return -1;
            rq->want_cwd_fd = 1;
            break;
        case NR_FIELD_STDIN:
        case NR_FIELD_STDOUT:
        case NR_FIELD_STDERR: {
            int slot = tag - NR_FIELD_STDIN;
            if (flen != 4) return -1;
            uint32_t mode = get_u32(v);
            if (mode > NR_STDIO_STDOUT || (mode == NR_STDIO_STDOUT && slot != 2)) return -1;
            rq->mode[slot] = mode;
            break;
        }
        case NR_FIELD_KILL_TIMEOUT:
            if (flen != 4) return -1;
            rq->kill_timeout_ms = get_u32(v);
            break;
        case NR_FIELD_CGROUP: {
            struct strv one = {0};
            if (rq->cgroup || strv_push(&one, v, flen) < 0 || !clean_absolute(one.v[0])) { strv_free(&one); return -1; }
            rq->cgroup = one.v[0];
            free(one.v);
            break;
        }
        case NR_FIELD_CGROUP_SET:
        {
            const uint8_t *eq = memchr(v, '=', flen);
            /* a controller's own file in the leaf; the value is free text */
            if (!eq || !controller_file(v, (size_t)(eq - v)) || strv_push(&rq->cgroup_set, v, flen) < 0) return -1;
        }
            break;
        case NR_FIELD_PTY:
            if (flen != 4 || get_u16(v) == 0 || get_u16(v + 2) == 0) return -1;
            rq->pty = 1;
            rq->winsize.ws_row = get_u16(v);
            rq->winsize.ws_col = get_u16(v + 2);
            break;
        case NR_FIELD_PTY_NO_ECHO:
            if (flen != 0) return -1;
            rq->no_echo = 1;
            break;
        case NR_FIELD_UMASK:
            if (flen != 4 || get_u32(v) > 0777) return -1;
            rq->umask = (int)get_u32(v);
            break;
        /* (uid_t)-1 would mean "unchanged" to setresuid: never a request. */
        case NR_FIELD_UID:
            if (flen != 4 || rq->set_uid || get_u32(v) == UINT32_MAX) return -1;
            rq->set_uid = 1;
            rq->uid = (uid_t)get_u32(v);
            break;
        case NR_FIELD_GID:
            if (flen != 4 || rq->set_gid || get_u32(v) == UINT32_MAX) return -1;
            rq->set_gid = 1;
            rq->gid = (gid_t)get_u32(v);
            break;
        case NR_FIELD_GROUPS:
            if (flen % 4 != 0 || flen / 4 > MAX_GROUPS || rq->set_groups) return -1;
            rq->ngroups = flen / 4;
            rq->groups = malloc((rq->ngroups ? rq->ngroups : 1) * sizeof *rq->groups);
            if (!rq->groups) return -1;
            for (size_t i = 0; i < rq->ngroups; i++) rq->groups[i] = (gid_t)get_u32(v + 4 * i);
            rq->set_groups = 1;
            break;
        case NR_FIELD_NO_NEW_PRIVS:
            if (flen != 0) return -1;
            rq->no_new_privs = 1;
            break;
        case NR_FIELD_NEW_SESSION:
            if (flen != 0 || rq->new_session) return -1;
            rq->new_session = 1;
            break;
        case NR_FIELD_PASS_FD: {
            /* A target the child's stdio owns, a duplicate, or one that is
             * not an int: the request is malformed. */
            if (flen != 4 || rq->npass >= MAX_PASS_FDS) return -1;
            uint32_t target = get_u32(v);
            if (target < 3 || target > INT32_MAX) return -1;
            for (int i = 0; i < rq->npass; i++)
                if (rq->pass_target[i] == (int)target) return -1;
            rq->pass_fd[rq->npass] = -1;
            rq->pass_target[rq->npass++] = (int)target;
            break;
        }
        case NR_FIELD_NICE:
            if (flen != 4 || rq->set_nice) return -1;
            rq->nice = (int32_t)get_u32(v);
            if (rq->nice < -40 || rq->nice > 40) return -1; /* beyond any niceness range */
            rq->set_nice = 1;
            break;
        case NR_FIELD_RLIMIT:
            if (flen != 20 || rq->nrlimits == MAX_RLIMITS) return -1;
            rq->rlimits[rq->nrlimits].resource = (int)get_u32(v);
            rq->rlimits[rq->nrlimits].limit.rlim_cur = (rlim_t)get_u64(v + 4);
            rq->rlimits[rq->nrlimits].limit.rlim_max = (rlim_t)get_u64(v + 12);
            rq->nrlimits++;
            break;
        default:
            return -1;
        }
    }
    if (rq->cgroup && !under_cgroup2_mount(rq->cgroup)) return -1;
    if (rq->no_echo && !rq->pty) return -1;
    return (rq->argv.n > 0 && rq->exec.n > 0) ? 0 : -1;
}

/* Block (bounded) until the whole OP_SPAWN frame is here, then parse it.
 * Returns 0, or -1 when the owner left or sent something else. */
static int read_request(int sock, struct inbuf *in, struct request *rq) {
    /* Shepherds are made ahead of need, so waiting for the first byte is
     * unbounded (the owner's death ends it with EOF); once a request has
     * begun, the rest must follow within REQUEST_BOUND_MS. */
    int64_t deadline = -1;
    for (;;) {
        uint16_t op;
        const uint8_t *payload;
        uint32_t len;
        int got = inbuf_frame(in, &op, &payload, &len);
        if (got < 0) return -1;
        if (got > 0) {
            if (op != NR_OP_SPAWN) return -1;
            int rc = parse_request(payload, len, rq);
            inbuf_consume(in, len);
            return rc;
        }
        ssize_t n = inbuf_fill(in, sock);
        if (n == 0) return -1;
        if (n > 0 && deadline < 0) deadline = now_ms() + REQUEST_BOUND_MS;
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
            struct pollfd p = {.fd = sock, .events = POLLIN};
            if (deadline >= 0 && ms_until(deadline) == 0) return -1;
            poll(&p, 1, deadline < 0 ? -1 : ms_until(deadline));
        }
    }
}

/* ------------------------------------------------------------ the child */

/* Between fork and exec: async-signal-safe calls only.  Failures go back
 * over the CLOEXEC error pipe as (stage, errno); success closes it. */
__attribute__((noreturn)) static void child_fail(int errfd, uint32_t stage, int err) {
    uint8_t p[8];
    put_u32(p, stage);
    put_u32(p + 4, (uint32_t)err);
    if (write(errfd, p, sizeof p) < 0) {
        /* the shepherd will see EOF and a non-zero status instead */
    }
    _exit(127);
}

/* fchdir needs search permission on the directory; inheriting a cwd does
 * not (an owner may sit in a directory its child's uid cannot enter, as a
 * fork would allow).  When fchdir is refused, being there already is as
 * good: compare with our own cwd through the /proc magic link, which needs
 * no permission on it.  Async-signal-safe (two stat calls). */
static int already_in(int dirfd) {
    struct stat want, here;
    int saved = errno;
    int same = fstat(dirfd, &want) == 0 && stat("/proc/self/cwd", &here) == 0 && want.st_dev == here.st_dev &&
               want.st_ino == here.st_ino;
    errno = saved;
    return same;
}

__attribute__((noreturn)) static void exec_child(const struct request *rq, const int child_end[3], int errfd,
                                                 int cgroup_procs, pid_t shepherd) {
    /* A forked copy of the shepherd: nothing written here reaches it. */
    int stdio[3] = {child_end[0], child_end[1], child_end[2]};
    sigset_t empty;
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    /* main() made every disposition default; undo only what we changed
     * (a handled SIGCHLD would reset at exec anyway, an ignored SIGPIPE not). */
    if (sigaction(SIGPIPE, &dfl, NULL) < 0 || sigaction(SIGCHLD, &dfl, NULL) < 0)
        child_fail(errfd, NR_STAGE_SIGNALS, errno);
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++) {
        if (sigaction(stop_signals[i], &dfl, NULL) < 0) child_fail(errfd, NR_STAGE_SIGNALS, errno);
    }
    for (size_t i = 0; i < sizeof stray_signals / sizeof stray_signals[0]; i++) {
        if (sigaction(stray_signals[i], &dfl, NULL) < 0) child_fail(errfd, NR_STAGE_SIGNALS, errno);
    }
    /* libc keeps its own real-time signals (32 and 33) out of sigaction's
     * reach, and a starter may have left them ignored (posix_spawn does):
     * an ignored disposition survives exec.  The raw syscall resets them;
     * all zeroes is SIG_DFL, no flags, an empty mask, on every architecture,
     * and 8 bytes is the kernel's sigset. */
    for (int sig = 32; sig < SIGRTMIN; sig++) {
        unsigned long kernel_sigaction[4] = {0, 0, 0, 0};
        if (syscall(SYS_rt_sigaction, sig, kernel_sigaction, NULL, (size_t)8) < 0)
            child_fail(errfd, NR_STAGE_SIGNALS, errno);
    }
    sigemptyset(&empty);
    if (sigprocmask(SIG_SETMASK, &empty, NULL) < 0) child_fail(errfd, NR_STAGE_SIGNALS, errno);
    /* Into the cgroup before anything can fork: "0" is this process. */
    if (cgroup_procs >= 0 && write(cgroup_procs, "0", 1) != 1) child_fail(errfd, NR_STAGE_CGROUP, errno);
    if (rq->pty) {
        /* A session of its own with the terminal as its controlling tty:
         * its pid is its process group, as in the pipe case. */
        if (setsid() < 0 || ioctl(stdio[0], TIOCSCTTY, 0) < 0) child_fail(errfd, NR_STAGE_PTY, errno);
    } else if (rq->new_session) {
        /* A session of its own, with no controlling terminal: it leads its
         * own group as well, so the group kill is the same. */
        if (setsid() < 0) child_fail(errfd, NR_STAGE_SETPGID, errno);
    } else if (setpgid(0, 0) < 0) {
        child_fail(errfd, NR_STAGE_SETPGID, errno);
    }

    /* Lift every fd we still need above every target number (0-2 and the
     * FIELD_PASS_FD ones) first, so no dup2 below can clobber a source,
     * the error pipe or the cwd fd (CPython's _posixsubprocess does the
     * same for its fds_to_keep).  The copies are CLOEXEC: only the dup2
     * targets survive the exec.  Nothing moves when no target is >= 3. */
    int floor = 3, cwd_fd = rq->cwd_fd;
    int pass[MAX_PASS_FDS];
    for (int i = 0; i < rq->npass; i++) {
        pass[i] = rq->pass_fd[i];
        if (rq->pass_target[i] >= floor) floor = rq->pass_target[i] + 1;
    }
    if (errfd < floor) {
        int lifted = fcntl(errfd, F_DUPFD_CLOEXEC, floor);
        if (lifted < 0) child_fail(errfd, NR_STAGE_PASS_FDS, errno);
        errfd = lifted;
    }
    if (cwd_fd >= 0 && cwd_fd < floor && (cwd_fd = fcntl(cwd_fd, F_DUPFD_CLOEXEC, floor)) < 0)
        child_fail(errfd, NR_STAGE_PASS_FDS, errno);
    for (int i = 0; i < 3; i++) {
        if (stdio[i] >= 0 && stdio[i] < floor) {
            stdio[i] = fcntl(stdio[i], F_DUPFD_CLOEXEC, floor);
            if (stdio[i] < 0) child_fail(errfd, NR_STAGE_DUP2, errno);
        }
    }
    for (int i = 0; i < rq->npass; i++) {
        if (pass[i] < floor && (pass[i] = fcntl(pass[i], F_DUPFD_CLOEXEC, floor)) < 0)
            child_fail(errfd, NR_STAGE_PASS_FDS, errno);
    }
    for (int i = 0; i < 3; i++) {
        if (stdio[i] >= 0 && dup2(stdio[i], i) < 0) child_fail(errfd, NR_STAGE_DUP2, errno);
    }
    /* Sources are all >= floor > every target: dup2 always makes a new,
     * non-CLOEXEC fd. */
    for (int i = 0; i < rq->npass; i++) {
        if (dup2(pass[i], rq->pass_target[i]) < 0) child_fail(errfd, NR_STAGE_PASS_FDS, errno);
    }
    /* The owner's own directory, by fd (never its path again: the path may
     * name another directory by now), then a relative cwd from there. */
    if (cwd_fd >= 0 && fchdir(cwd_fd) < 0 && !already_in(cwd_fd)) child_fail(errfd, NR_STAGE_CHDIR, errno);
    if (rq->cwd && chdir(rq->cwd) < 0) child_fail(errfd, NR_STAGE_CHDIR, errno);
    if (rq->umask >= 0) umask((mode_t)rq->umask);
    for (int i = 0; i < rq->nrlimits; i++) {
        if (setrlimit(rq->rlimits[i].resource, &rq->rlimits[i].limit) < 0)
            child_fail(errfd, NR_STAGE_RLIMIT, errno);
    }
    /* nice(1)'s rule: the increment on top of the niceness we have, which
     * the kernel clamps to [-20, 19].  Before the ids change, so a
     * privileged owner may make a child it runs as another user less nice. */
    if (rq->set_nice) {
        errno = 0;
        int now = getpriority(PRIO_PROCESS, 0);
        if (now == -1 && errno) child_fail(errfd, NR_STAGE_NICE, errno);
        if (setpriority(PRIO_PROCESS, 0, now + rq->nice) < 0) child_fail(errfd, NR_STAGE_NICE, errno);
    }
    /* Credentials last (after rlimits, which may need root to raise a hard
     * limit), in CPython's order: setgroups, setgid, setuid, each setting
     * real, effective and saved ids.  Raw syscalls: glibc's wrappers may
     * broadcast set*id to "all threads" (setxid), which a vfork child that
     * shares our memory must not attempt; the syscall changes this task
     * only.  (The kernel also marks the shared mm non-dumpable when the
     * ids change; it is already.) */
    if (rq->set_groups && syscall(SYS_setgroups, rq->ngroups, rq->groups) < 0)
        child_fail(errfd, NR_STAGE_CREDENTIALS, errno);
    if (rq->set_gid && syscall(SYS_setresgid, rq->gid, rq->gid, rq->gid) < 0)
        child_fail(errfd, NR_STAGE_CREDENTIALS, errno);
    if (rq->set_uid && syscall(SYS_setresuid, rq->uid, rq->uid, rq->uid) < 0)
        child_fail(errfd, NR_STAGE_CREDENTIALS, errno);
    if (rq->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) child_fail(errfd, NR_STAGE_PRCTL, errno);
    /* Should this shepherd die without finishing (SIGKILL: its normal exit
     * comes only after the child is reaped), the kernel kills the child at
     * once, even with no fork server left to sweep.  Set after the ids
     * change (which clears it); an exec of a set-id program clears it too.
     * The shepherd may have died before the prctl: then we go. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) child_fail(errfd, NR_STAGE_PRCTL, errno);
    if (getppid() != shepherd) _exit(127);
    /* Like CPython's _posixsubprocess: remember the first error that is not
     * "no such file", so a PATH entry without the program does not hide a
     * later one that exists but is not executable. */
    static char *no_env[] = {NULL};
    char **envp = rq->env.n ? rq->env.v : no_env;
    int saved = 0;
    for (size_t i = 0; i < rq->exec.n; i++) {
        execve(rq->exec.v[i], rq->argv.v, envp);
        if (errno != ENOENT && errno != ENOTDIR && saved == 0) saved = errno;
    }
    child_fail(errfd, NR_STAGE_EXEC, saved ? saved : errno);
}

/* --------------------------------------------------------------- cgroup */

/* Write a short string to <dir>/<file>; 0 or -1 with errno (a failed
 * write or close counts: cgroup files report errors there). */
static int cgroup_write(const char *dir, const char *file, const char *value, size_t len) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, file) >= sizeof path) { errno = ENAMETOOLONG; return -1; }
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n;
    do n = write(fd, value, len); while (n < 0 && errno == EINTR);
    int saved = errno;
    if (close(fd) < 0 && n >= 0) return -1;
    errno = saved;
    return n == (ssize_t)len ? 0 : -1;
}

/* Create the leaf (an existing one is an error: never adopt, never remove
 * what we did not make), apply the settings, and open cgroup.procs for the
 * child to write itself into before exec.  Returns the fd, or -1 with the
 * stage in *stage (the leaf is removed again on failure). */
static int cgroup_setup(const struct request *rq, uint32_t *stage) {
    char path[4096];
    *stage = NR_STAGE_CGROUP;
    if (mkdir(rq->cgroup, 0755) < 0) return -1;
    /* 0755 whatever our umask (the fork server's: a umask 077 owner would
     * make a leaf only root can look into). */
    if (chmod(rq->cgroup, 0755) < 0) goto fail;
    /* Without cgroup.kill (Linux < 5.14, or not ours to write) the leaf
     * could not be emptied at once when the child ends: refuse rather
     * than contain less than promised. */
    snprintf(path, sizeof path, "%s/cgroup.kill", rq->cgroup);
    if (access(path, W_OK) < 0) {
        if (errno == ENOENT) errno = EOPNOTSUPP;
        goto fail;
    }
    for (size_t i = 0; i < rq->cgroup_set.n; i++) {
        const char *entry = rq->cgroup_set.v[i];
        const char *eq = strchr(entry, '=');
        char file[256];
        size_t flen = (size_t)(eq - entry);
        if (flen == 0 || flen >= sizeof file) { errno = EINVAL; goto fail_set; }
        memcpy(file, entry, flen);
        file[flen] = '\0';
        if (cgroup_write(rq->cgroup, file, eq + 1, strlen(eq + 1)) < 0) goto fail_set;
    }
    snprintf(path, sizeof path, "%s/cgroup.procs", rq->cgroup);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) return fd;
    goto fail;
fail_set:
    *stage = NR_STAGE_CGROUP_SET;
fail:;
    int saved = errno;
    rmdir(rq->cgroup);
    errno = saved;
    return -1;
}

/* Kill everything in the leaf, reap what was ours, wait (bounded) until
 * it is empty, remove it.  Woken by SIGCHLD (our dead to reap) and by
 * POLLPRI on cgroup.events (its "populated" flag changed). */
static void cgroup_teardown(const char *dir) {
    int64_t deadline = now_ms() + NR_BOUND_REAP_MS;
    char path[4096], buf[256];
    if (cgroup_write(dir, "cgroup.kill", "1", 1) < 0) complain("cgroup.kill");
    snprintf(path, sizeof path, "%s/cgroup.events", dir);
    int events = open(path, O_RDONLY | O_CLOEXEC), saw_empty = 0;
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0) {
        }
        if (rmdir(dir) == 0 || errno == ENOENT) break;
        /* Empty yet busy means a sub-cgroup someone made: not ours to force. */
        if (errno != EBUSY || events < 0 || saw_empty || ms_until(deadline) == 0) { complain("rmdir cgroup"); break; }
        ssize_t n = pread(events, buf, sizeof buf - 1, 0); /* also re-arms POLLPRI */
        if (n < 0) { complain("read cgroup.events"); break; }
        buf[n] = '\0';
        if (strstr(buf, "populated 0")) { saw_empty = 1; continue; }
        struct pollfd p[2] = {{.fd = events, .events = POLLPRI}, {.fd = sigchld_pipe[0], .events = POLLIN}};
        if (poll(p, 2, ms_until(deadline)) > 0 && p[1].revents) drain_sigchld_pipe();
    }
    if (events >= 0) close(events);
}

/* ------------------------------------------------------------- shepherd */

struct shepherd {
    int sock;
    pid_t child;
    uint32_t kill_timeout_ms;
    int owner_gone;
    int64_t kill_at;   /* SIGKILL due (0 = not stopping) */
    int64_t giveup_at; /* SIGKILL sent; reaping bound (0 = not yet) */
    struct inbuf in;
    char *cgroup; /* the leaf we created for the child, or NULL */
    /* Until the child has exec'd: the read end of its error pipe, and the
     * owner's pipe ends that STARTED will carry (-1 once sent or unused). */
    int errpipe;
    int owner_end[3];
};

/* As timeout(1) does: a stopped process (SIGSTOP, or SIGTTIN/SIGTTOU from
 * its terminal) only acts on a signal it handles once it runs again, so a
 * stop request would otherwise wait out the whole grace.  Every TERM-class
 * signal we send is therefore followed by SIGCONT to the same targets. */
static int needs_cont(int sig) {
    return sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT;
}

/* The child's group, or the child alone if it left its group. */
static void signal_group(const struct shepherd *s, int sig) {
    if (kill(-s->child, sig) < 0 && errno == ESRCH) kill(s->child, sig);
}

/* The child's group and every descendant re-parented to us (their groups
 * too); TERM-class signals are followed by SIGCONT. */
static void signal_all(const struct shepherd *s, int sig) {
    pid_t kids[1024];
    int n = list_children(kids, 1024);
    for (int round = 0; round < (needs_cont(sig) ? 2 : 1); round++) {
        int now = round ? SIGCONT : sig;
        signal_group(s, now);
        for (int i = 0; i < n; i++)
            if (kids[i] != s->child) signal_tree_member(kids[i], now);
    }
}

static void escalate(struct shepherd *s) {
    signal_all(s, SIGKILL);
    if (s->cgroup && cgroup_write(s->cgroup, "cgroup.kill", "1", 1) < 0) complain("cgroup.kill");
    s->kill_at = 0;
    if (!s->giveup_at) s->giveup_at = now_ms() + NR_BOUND_REAP_MS;
}

static void begin_stop(struct shepherd *s, uint32_t grace_ms) {
    if (s->giveup_at) return;
    if (grace_ms == 0) { escalate(s); return; }
    int64_t due = now_ms() + grace_ms;
    if (!s->kill_at) signal_all(s, SIGTERM);
    if (!s->kill_at || due < s->kill_at) s->kill_at = due;
}

/* The socket stays open (unread) until we exit: an owner that only
 * half-closed it (an interrupted spawn) learns from our hang-up that the
 * child is reaped. */
static void owner_lost(struct shepherd *s) {
    if (s->owner_gone) return;
    s->owner_gone = 1;
    inbuf_close_fds(&s->in);
    begin_stop(s, s->kill_timeout_ms);
}

/* Reap re-parented descendants that already exited; 1 when the child itself
 * has exited (left unreaped, so its pid and group id stay pinned). */
static int child_has_exited(const struct shepherd *s) {
    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0) {
            if (errno == EINTR) continue;
            return 0;
        }
        if (si.si_pid == 0) return 0;
        if (si.si_pid == s->child) return 1;
        waitpid(si.si_pid, NULL, 0);
    }
}

/* The process-tree rule: once the child is gone, everything it left is
 * garbage.  SIGKILL the lot and reap until we have no children, bounded. */
static void kill_leftovers(void) {
    int64_t deadline = now_ms() + NR_BOUND_REAP_MS;
    pid_t kids[1024];
    for (;;) {
        pid_t reaped;
        while ((reaped = waitpid(-1, NULL, WNOHANG)) > 0) {
        }
        /* Every leftover descendant is our child by now (subreaper), so
         * ECHILD means there is nothing left: the common, fast case. */
        if (reaped < 0 && errno == ECHILD) return;
        int n = list_children(kids, 1024);
        for (int i = 0; i < n; i++) signal_tree_member(kids[i], SIGKILL);
        if (ms_until(deadline) == 0) return;
        wait_sigchld(deadline);
    }
}

/* The leaf's memory accounting, when its memory controller is enabled:
 * how many OOM kills happened in it and its peak usage (-1: unknown). */
static int64_t cgroup_read_key(const char *dir, const char *file, const char *key) {
    char path[4096], buf[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = '\0';
    const char *at = buf;
    if (key) {
        size_t klen = strlen(key);
        for (at = buf; (at = strstr(at, key)) != NULL; at += klen)
            if ((at == buf || at[-1] == '\n') && at[klen] == ' ') break;
        if (!at) return -1;
        at += klen + 1;
    }
    return strtoll(at, NULL, 10);
}

static void send_cgroup_stats(const struct shepherd *s) {
    int64_t ooms = cgroup_read_key(s->cgroup, "memory.events", "oom_kill");
    int64_t peak = cgroup_read_key(s->cgroup, "memory.peak", NULL);
    if (ooms < 0 && peak < 0) return; /* no memory controller here */
    uint8_t p[16];
    put_u64(p, (uint64_t)ooms);
    put_u64(p + 8, (uint64_t)peak);
    if (send_frame(s->sock, NR_OP_CGROUP_STATS, p, sizeof p, NULL, 0) < 0) complain_send("send CGROUP_STATS");
}

static int finish(struct shepherd *s) {
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    kill(-s->child, SIGKILL); /* the group, while the zombie pins its id */
    while (wait4(s->child, &status, 0, &ru) < 0 && errno == EINTR) {
    }
    kill_leftovers();
    /* The cgroup's members die now (cgroup.kill is immediate); waiting for
     * the leaf to empty and removing it is the slow part, after the report. */
    if (s->cgroup && cgroup_write(s->cgroup, "cgroup.kill", "1", 1) < 0) complain("cgroup.kill");
    if (s->cgroup && !s->owner_gone) send_cgroup_stats(s);
    if (!s->owner_gone) {
        uint8_t p[28];
        put_u32(p, (uint32_t)status);
        put_u64(p + 4, (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec);
        put_u64(p + 12, (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec);
        put_u64(p + 20, (uint64_t)ru.ru_maxrss);
        if (send_frame(s->sock, NR_OP_EXITED, p, sizeof p, NULL, 0) < 0) complain_send("send EXITED");
    }
    if (s->cgroup) cgroup_teardown(s->cgroup);
    return 0;
}

/* Act on every whole command in the carry buffer; anything unexpected
 * counts as owner loss. */
static void handle_commands(struct shepherd *s) {
    for (;;) {
        uint16_t op;
        const uint8_t *payload;
        uint32_t len;
        int got = inbuf_frame(&s->in, &op, &payload, &len);
        if (got == 0) return;
        if (got < 0 || len != 4) { owner_lost(s); return; }
        uint32_t arg = get_u32(payload);
        inbuf_consume(&s->in, len);
        if (op == NR_OP_SIGNAL && arg >= 1 && arg < (uint32_t)NSIG) {
            signal_group(s, (int)arg);
            if (needs_cont((int)arg)) signal_group(s, SIGCONT);
        } else if (op == NR_OP_STOP) {
            begin_stop(s, arg);
        } else {
            owner_lost(s);
            return;
        }
    }
}

static void handle_owner_input(struct shepherd *s) {
    ssize_t n = inbuf_fill(&s->in, s->sock);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0 || s->in.nfds > 0) { owner_lost(s); return; }
    handle_commands(s);
}

static void drop_cgroup(struct shepherd *s) {
    if (!s->cgroup) return;
    cgroup_teardown(s->cgroup);
    free(s->cgroup);
    s->cgroup = NULL;
}

/* Wait (bounded) until the child is reaped; 0 once it is, -1 if the bound
 * passed first. */
static int reap_child(const struct shepherd *s, int64_t deadline) {
    for (;;) {
        pid_t got = waitpid(s->child, NULL, WNOHANG);
        if (got == s->child || (got < 0 && errno == ECHILD)) return 0;
        if (got < 0 && errno == EINTR) continue;
        if (ms_until(deadline) == 0) return -1;
        wait_sigchld(deadline);
    }
}

/* A pidfd of our (unreaped) child, O_CLOEXEC as every pidfd; -1 on a
 * kernel without pidfd_open (before 5.3): the owner then does without. */
static int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
    long fd = syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) return (int)fd;
    if (errno != ENOSYS) complain("pidfd_open");
#else
    (void)pid;
#endif
    return -1;
}

/* The child's error pipe is readable.  A report means it failed before
 * exec (it is exiting: reap it, clean up, report SPAWN_FAILED; returns the
 * shepherd's exit code).  EOF means the exec closed the pipe, or the child
 * died before it (a stop, a kill): either way it counts as started, STARTED
 * goes out with the owner's pipe ends, and supervise() reports the end as
 * for any child (returns -1: go on). */
static int resolve_start(struct shepherd *s) {
    uint8_t report[8];
    ssize_t n;
    do n = read(s->errpipe, report, sizeof report); while (n < 0 && errno == EINTR);
    if (n < 0) return -1; /* EAGAIN: nothing yet after all */
    close_fd(&s->errpipe);
    if (n > 0) {
        /* SIGKILL too: it could be frozen between its report and _exit. */
        kill(s->child, SIGKILL);
        if (reap_child(s, now_ms() + NR_BOUND_REAP_MS) < 0) complain("reaping a child that failed before exec");
        drop_cgroup(s); /* before the report: a failed call leaves no cgroup */
        if (!s->owner_gone) {
            if (n == (ssize_t)sizeof report) send_spawn_failed(s->sock, get_u32(report), (int)get_u32(report + 4));
            else send_spawn_failed(s->sock, NR_STAGE_EXEC, EIO);
        }
        return 0;
    }
    if (!s->owner_gone) {
        uint8_t started[8];
        int fds[4], nfds = 0;
        uint32_t mask = 0;
        for (int i = 0; i < 3; i++) {
            if (s->owner_end[i] < 0) continue;
            mask |= 1u << i;
            fds[nfds++] = s->owner_end[i];
        }
        /* The owner's own hold on the child, for when we are lost or stop
         * answering: it can then see the child exit and kill it and its
         * group without trusting a pid.  The child is ours and unreaped
         * (even if it already exited), so the pid names nobody else yet. */
        int pidfd = open_pidfd(s->child);
        if (pidfd >= 0) {
            mask |= NR_FDMASK_PIDFD;
            fds[nfds++] = pidfd;
        }
        put_u32(started, (uint32_t)s->child);
        put_u32(started + 4, mask);
        if (send_frame(s->sock, NR_OP_STARTED, started, sizeof started, fds, nfds) < 0) owner_lost(s);
        close_fd(&pidfd);
    }
    for (int i = 0; i < 3; i++) close_fd(&s->owner_end[i]);
    return -1;
}

static int supervise(struct shepherd *s) {
    /* Commands that arrived in the same read as the SPAWN request are
     * already buffered: the socket will not poll readable for them. */
    if (!s->owner_gone) handle_commands(s);
    for (;;) {
        /* Before the exec is confirmed, the child's end shows on the error
         * pipe first (it closes with the child): resolve_start() sees it. */
        if (s->errpipe < 0 && child_has_exited(s)) return finish(s);
        if (stop_requested) {
            stop_requested = 0;
            begin_stop(s, s->kill_timeout_ms);
        }
        if (s->kill_at && now_ms() >= s->kill_at) escalate(s);
        if (s->giveup_at && now_ms() >= s->giveup_at) {
            errno = ETIMEDOUT;
            complain("child did not die after SIGKILL");
            if (s->cgroup) cgroup_teardown(s->cgroup);
            return 1;
        }
        int timeout = -1;
        if (s->kill_at) timeout = ms_until(s->kill_at);
        else if (s->giveup_at) timeout = ms_until(s->giveup_at);
        struct pollfd p[3] = {{.fd = sigchld_pipe[0], .events = POLLIN},
                              {.fd = s->owner_gone ? -1 : s->sock, .events = POLLIN},
                              {.fd = s->errpipe, .events = POLLIN}};
        int n = poll(p, 3, timeout);
        if (n < 0 && errno != EINTR) { complain("poll"); owner_lost(s); }
        if (n <= 0) continue;
        if (p[0].revents) drain_sigchld_pipe();
        if (!s->owner_gone && p[1].revents) handle_owner_input(s);
        if (s->errpipe >= 0 && p[2].revents) {
            int rc = resolve_start(s);
            if (rc >= 0) return rc;
        }
    }
}

/* What a spawn needs, made while the shepherd idles (a spare waits for its
 * request), so the request's path to exec is parse, vfork, exec. */
struct prepped {
    int pipes[3][2]; /* read end, write end; -1 when not (or no longer) ours */
    int null;        /* /dev/null, O_RDWR, dup'ed per DEVNULL slot */
    int errpipe[2];
};

/* A stdio pipe (1 MiB if allowed), or the error pipe (non-blocking: the
 * shepherd reads it when poll says so, among other fds). */
static void prep_pipe(int p[2], int errpipe) {
    if (pipe2(p, O_CLOEXEC | (errpipe ? O_NONBLOCK : 0)) < 0) {
        p[0] = p[1] = -1;
        return;
    }
    if (!errpipe) fcntl(p[1], F_SETPIPE_SZ, 1 << 20); /* best effort: pipe-max-size may be lower */
}

static void prepare(struct prepped *pp) {
    for (int i = 0; i < 3; i++) prep_pipe(pp->pipes[i], 0);
    prep_pipe(pp->errpipe, 1);
    pp->null = open("/dev/null", O_RDWR | O_CLOEXEC);
}

static void prepped_close(struct prepped *pp) {
    for (int i = 0; i < 3; i++) {
        close_fd(&pp->pipes[i][0]);
        close_fd(&pp->pipes[i][1]);
    }
    close_fd(&pp->errpipe[0]);
    close_fd(&pp->errpipe[1]);
    close_fd(&pp->null);
}

/* Take a prepared pipe (or make one now). */
static int take_pipe(int from[2], int p[2], int errpipe) {
    if (from[0] < 0) {
        prep_pipe(from, errpipe);
        if (from[0] < 0) return -1;
    }
    p[0] = from[0];
    p[1] = from[1];
    from[0] = from[1] = -1;
    return 0;
}

static int echo_off(int tty) {
    struct termios t;
    if (tcgetattr(tty, &t) < 0) return -1;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
    return tcsetattr(tty, TCSANOW, &t);
}

/* The pty: the child gets the slave as 0, 1 and 2; the owner gets the
 * master twice (its "stdin" and "stdout" ends: closing one never hangs up
 * the terminal while the other is open).  Initial size from the request,
 * and ECHO off if asked (set on the slave before the child exists, so not
 * even its first input is echoed, as pexpect's echo=False). */
static int open_pty(const struct request *rq, int child_end[3], int owner_end[3]) {
    char name[128];
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) return -1;
    int slave = -1;
    if (grantpt(master) < 0 || unlockpt(master) < 0 || ptsname_r(master, name, sizeof name) != 0 ||
        (slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0 || ioctl(master, TIOCSWINSZ, &rq->winsize) < 0 ||
        fcntl(master, F_SETFL, O_NONBLOCK) < 0 || (rq->no_echo && echo_off(slave) < 0) ||
        (owner_end[0] = fcntl(master, F_DUPFD_CLOEXEC, 3)) < 0) {
        int saved = errno;
        close(master);
        if (slave >= 0) close(slave);
        errno = saved;
        return -1;
    }
    owner_end[1] = master;
    child_end[0] = slave;
    if ((child_end[1] = fcntl(slave, F_DUPFD_CLOEXEC, 3)) < 0 || (child_end[2] = fcntl(slave, F_DUPFD_CLOEXEC, 3)) < 0)
        return -1;
    return 0;
}

static int open_stdio(struct request *rq, struct inbuf *in, struct prepped *pp, int child_end[3], int owner_end[3]) {
    int next_inherited = 0;
    if (rq->pty) {
        for (int i = 0; i < 3; i++) child_end[i] = owner_end[i] = -1;
        return open_pty(rq, child_end, owner_end);
    }
    for (int i = 0; i < 3; i++) {
        child_end[i] = owner_end[i] = -1;
        switch (rq->mode[i]) {
        case NR_STDIO_PIPE: {
            int p[2];
            if (take_pipe(pp->pipes[i], p, 0) < 0) return -1;
            child_end[i] = i == 0 ? p[0] : p[1];
            owner_end[i] = i == 0 ? p[1] : p[0];
            /* The owner drives its ends non-blocking: set it here, once. */
            if (fcntl(owner_end[i], F_SETFL, O_NONBLOCK) < 0) return -1;
            break;
        }
        case NR_STDIO_DEVNULL:
            if (pp->null < 0 && (pp->null = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) return -1;
            child_end[i] = fcntl(pp->null, F_DUPFD_CLOEXEC, 3);
            if (child_end[i] < 0) return -1;
            break;
        case NR_STDIO_INHERIT:
            if (next_inherited >= in->nfds) { errno = EBADF; return -1; }
            child_end[i] = in->fds[next_inherited];
            in->fds[next_inherited++] = -1;
            break;
        case NR_STDIO_STDOUT:
            child_end[i] = fcntl(child_end[1], F_DUPFD_CLOEXEC, 3);
            if (child_end[i] < 0) return -1;
            break;
        }
    }
    return 0;
}

/* fork, not vfork: a vfork parent is suspended until the child execs or
 * exits, and a child can hang before its exec (a frozen cgroup it joins, a
 * hung filesystem in chdir or execve); we must stay free to act on our owner
 * meanwhile (ADR 0009).  The shepherd is small, so the copy is cheap.
 * Signals stay blocked across the fork until the child has reset its own
 * handlers (ours would write to our SIGCHLD pipe). */
static pid_t launch(const struct request *rq, const int child_end[3], int errfd, int cgroup_procs) {
    sigset_t all, saved;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &saved);
    pid_t me = getpid();
    pid_t pid = plain_fork();
    if (pid == 0) exec_child(rq, child_end, errfd, cgroup_procs, me);
    int err = errno;
    sigprocmask(SIG_SETMASK, &saved, NULL);
    errno = err;
    return pid;
}

/* Fork the child.  Returns 0 with s->child and s->errpipe set (the exec
 * is confirmed later, by supervise()), or 1 after reporting a failure. */
static int start_child(struct shepherd *s, struct request *rq, struct prepped *pp) {
    /* All -1 up front: open_stdio may fail before it reaches every slot. */
    int child_end[3] = {-1, -1, -1}, errpipe[2] = {-1, -1};
    int rc = 1, cgroup_procs = -1;
    if (rq->want_cwd_fd) {
        /* The cwd fd comes last, after the STDIO_INHERIT ones. */
        if (s->in.nfds == 0) {
            send_spawn_failed(s->sock, NR_STAGE_REQUEST, EBADF);
            goto out;
        }
        rq->cwd_fd = s->in.fds[--s->in.nfds];
    }
    /* The FIELD_PASS_FD fds come after the STDIO_INHERIT ones. */
    if (rq->npass > 0) {
        if (s->in.nfds < rq->npass) {
            send_spawn_failed(s->sock, NR_STAGE_REQUEST, EBADF);
            goto out;
        }
        s->in.nfds -= rq->npass;
        for (int i = 0; i < rq->npass; i++) {
            rq->pass_fd[i] = s->in.fds[s->in.nfds + i];
            s->in.fds[s->in.nfds + i] = -1;
        }
    }
    if (open_stdio(rq, &s->in, pp, child_end, s->owner_end) < 0 || take_pipe(pp->errpipe, errpipe, 1) < 0) {
        send_spawn_failed(s->sock, NR_STAGE_PIPE, errno);
        goto out;
    }
    prepped_close(pp); /* whatever this request did not use */
    if (rq->cgroup) {
        uint32_t stage;
        cgroup_procs = cgroup_setup(rq, &stage);
        if (cgroup_procs < 0) {
            send_spawn_failed(s->sock, stage, errno);
            goto out;
        }
        s->cgroup = rq->cgroup; /* ours to tear down from now on */
        rq->cgroup = NULL;
    }
    inbuf_close_fds(&s->in);
    pid_t pid = launch(rq, child_end, errpipe[1], cgroup_procs);
    if (pid < 0) {
        send_spawn_failed(s->sock, NR_STAGE_FORK, errno);
        goto out;
    }
    /* Also in the child: whichever runs first wins, no race.  Not for a
     * terminal: the child runs concurrently (fork), and a group leader's
     * setsid() would fail (nor for FIELD_NEW_SESSION); until its setsid, kill(-pid) finds no group and
     * signal_all() falls back to the pid. */
    if (!rq->pty && !rq->new_session) setpgid(pid, pid);
    s->child = pid;
    s->errpipe = errpipe[0];
    errpipe[0] = -1;
    rc = 0;
out:
    for (int i = 0; i < 3; i++) close_fd(&child_end[i]);
    close_fd(&errpipe[0]);
    close_fd(&errpipe[1]);
    close_fd(&cgroup_procs);
    close_fd(&rq->cwd_fd); /* the child has its copy */
    for (int i = 0; i < rq->npass; i++) close_fd(&rq->pass_fd[i]);
    inbuf_close_fds(&s->in);
    if (rc != 0) {
        for (int i = 0; i < 3; i++) close_fd(&s->owner_end[i]);
        drop_cgroup(s);
    }
    return rc;
}

static int run_shepherd(int sock) {
    struct shepherd s = {.sock = sock, .child = -1, .kill_timeout_ms = NR_DEFAULT_KILL_TIMEOUT_MS,
                         .errpipe = -1, .owner_end = {-1, -1, -1}};
    struct request rq;
    memset(&rq, 0, sizeof rq);
    rq.cwd_fd = -1;
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) complain("prctl PR_SET_CHILD_SUBREAPER");
    int flags = fcntl(sock, F_GETFL);
    if (flags < 0 || fcntl(sock, F_SETFL, flags | O_NONBLOCK) < 0) { complain("fcntl O_NONBLOCK"); return 1; }
    if (install_signals(1) < 0) return 1;
    struct prepped pp;
    prepare(&pp);
    if (read_request(sock, &s.in, &rq) < 0) {
        /* No child exists: a clean exit (EOF while idle is the normal end
         * of a spare shepherd whose owner went away). */
        send_spawn_failed(sock, NR_STAGE_REQUEST, EINVAL);
        prepped_close(&pp);
        request_free(&rq);
        free(s.in.buf);
        inbuf_close_fds(&s.in);
        return 0;
    }
    s.kill_timeout_ms = rq.kill_timeout_ms;
    stop_requested = 0; /* a stop signal while idle concerned no child */
    /* A start failure was reported to the owner: that is a clean exit. */
    int rc = start_child(&s, &rq, &pp) == 0 ? -1 : 0;
    prepped_close(&pp);
    request_free(&rq);
    if (rc < 0) rc = supervise(&s);
    close_fd(&s.errpipe);
    for (int i = 0; i < 3; i++) close_fd(&s.owner_end[i]);
    free(s.cgroup);
    close_fd(&s.sock);
    free(s.in.buf);
    return rc;
}

/* ----------------------------------------------------------- fork server */

struct pidset {
    pid_t *v;
    size_t n, cap;
};

static int pidset_add(struct pidset *s, pid_t pid) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        pid_t *grown = realloc(s->v, cap * sizeof *grown);
        if (!grown) return -1;
        s->v = grown;
        s->cap = cap;
    }
    s->v[s->n++] = pid;
    return 0;
}

static int pidset_remove(struct pidset *s, pid_t pid) {
    for (size_t i = 0; i < s->n; i++) {
        if (s->v[i] == pid) { s->v[i] = s->v[--s->n]; return 1; }
    }
    return 0;
}

/* A shepherd died without finishing: its child and anything else it left
 * was re-parented to us (we are a subreaper).  Kill every child of ours that
 * is not a live shepherd. */
static void kill_orphans(const struct pidset *shepherds) {
    pid_t kids[1024];
    int n = list_children(kids, 1024);
    for (int i = 0; i < n; i++) {
        int ours = 0;
        for (size_t j = 0; j < shepherds->n; j++) ours |= shepherds->v[j] == kids[i];
        if (!ours) signal_tree_member(kids[i], SIGKILL);
    }
}

/* SIGCONT every shepherd we have not reaped (so no pid here is reused). */
static void continue_shepherds(const struct pidset *shepherds) {
    for (size_t i = 0; i < shepherds->n; i++)
        if (kill(shepherds->v[i], SIGCONT) < 0) complain("kill SIGCONT");
}

static void reap_shepherds(struct pidset *shepherds) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        int was_shepherd = pidset_remove(shepherds, pid);
        if (!was_shepherd || !WIFEXITED(status) || WEXITSTATUS(status) != 0) kill_orphans(shepherds);
    }
}

struct server {
    int ctl;
    struct pidset shepherds;
};

/* Fork a shepherd that serves ``sock``; the server keeps only its pid. */
static void fork_shepherd(struct server *sv, int sock) {
    pid_t pid = plain_fork();
    if (pid == 0) {
        close(sv->ctl);
        close_fd(&sigchld_pipe[0]);
        close_fd(&sigchld_pipe[1]);
        free(sv->shepherds.v);
        _exit(run_shepherd(sock)); /* no exit handlers: nothing to flush, pages left untouched */
    }
    if (pid < 0) send_spawn_failed(sock, NR_STAGE_FORK, errno);
    else if (pidset_add(&sv->shepherds, pid) < 0) complain("pidset_add");
}

/* One FS_ADOPT datagram from the owner, carrying one end of a socketpair
 * the owner made: fork a shepherd that serves it.  No reply: the owner
 * usually adopts a shepherd *ahead of need* (a spare), so by the time it
 * spawns, the shepherd is forked and waiting for its SPAWN request.
 * Returns -1 when the owner is gone or sent anything else. */
static int serve_fork(struct server *sv) {
    uint8_t op = 0;
    int fds[MAX_FDS], nfds = 0;
    union {
        char raw[CMSG_SPACE(sizeof(int) * MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = &op, .iov_len = 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = control.raw, .msg_controllen = sizeof control.raw};
    ssize_t n;
    do n = recvmsg(sv->ctl, &msg, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
    if (n <= 0) return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *got = (int *)(void *)CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
            if (nfds < MAX_FDS) fds[nfds++] = got[i];
            else close(got[i]);
        }
    }
    if (op != NR_FS_ADOPT || nfds != 1 || (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC))) {
        for (int i = 0; i < nfds; i++) close(fds[i]);
        return -1;
    }
    fork_shepherd(sv, fds[0]);
    close(fds[0]);
    return 0;
}

/* Any child left at all (checked without reaping it: the reap belongs to
 * reap_shepherds, which sweeps what a dead process leaves behind). */
static int has_children(void) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    return !(waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD);
}

static int run_fork_server(int ctl) {
    struct server sv = {.ctl = ctl};
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) complain("prctl PR_SET_CHILD_SUBREAPER");
    if (install_signals(0) < 0) return 1;
    for (;;) {
        reap_shepherds(&sv.shepherds);
        if (sv.ctl < 0 && sv.shepherds.n == 0 && !has_children()) break;
        struct pollfd p[2] = {{.fd = sigchld_pipe[0], .events = POLLIN}, {.fd = sv.ctl, .events = POLLIN}};
        int n = poll(p, sv.ctl < 0 ? 1 : 2, -1);
        if (n < 0 && errno != EINTR) { complain("poll"); break; }
        if (n <= 0) continue;
        if (p[0].revents) drain_sigchld_pipe();
        /* Owner gone: every shepherd sees its own hang-up; wait for them.
         * A stopped shepherd would not see it until someone continues it
         * (nobody may: the kernel's SIGCONT for an orphaned group does not
         * come when a subreaper in the owner's session adopts us), so
         * continue every live one now; each then stops its child. */
        if (sv.ctl >= 0 && p[1].revents && serve_fork(&sv) < 0) {
            close_fd(&sv.ctl);
            continue_shepherds(&sv.shepherds);
        }
    }
    free(sv.shepherds.v);
    return 0;
}

/* -------------------------------------------------------------------- main */

/* Start from a clean slate: nothing but 0-3 open, 0 and 1 on /dev/null
 * (we never write there; stderr stays for diagnostics), fd 3 CLOEXEC. */
static int tidy_fds(void) {
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) { complain("open /dev/null"); return -1; }
    if (null != 0 && dup2(null, 0) < 0) { complain("dup2 stdin"); return -1; }
    if (null != 1 && dup2(null, 1) < 0) { complain("dup2 stdout"); return -1; }
    if (null > 3) close(null);
    if (fcntl(OWNER_FD, F_SETFD, FD_CLOEXEC) < 0) { complain("fcntl owner socket"); return -1; }
#ifdef SYS_close_range
    if (syscall(SYS_close_range, OWNER_FD + 1, ~0U, 0) == 0) return 0;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = OWNER_FD + 1; fd < (max > 0 ? max : 1024); fd++) close((int)fd);
    return 0;
}

/* Every disposition default and nothing blocked, whatever our starter had:
 * children then only need to undo what we change ourselves. */
static int pristine_signals(void) {
    struct sigaction dfl;
    sigset_t empty;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        sigaction(sig, &dfl, NULL); /* EINVAL for libc-reserved signals is fine */
    }
    sigemptyset(&empty);
    if (sigprocmask(SIG_SETMASK, &empty, NULL) < 0) { complain("sigprocmask"); return -1; }
    return 0;
}

int main(int argc, char **argv) {
    /* Non-dumpable before anything else: a child of the same uid could
     * otherwise ptrace us or pidfd_getfd our sockets (forge an EXITED, read
     * a later job's SPAWN request).  Shepherds inherit it across fork; a
     * child's execve makes the child dumpable again by the usual rules. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) { complain("prctl PR_SET_DUMPABLE"); return 1; }
    if (argc != 2 || (strcmp(argv[1], "--fork-server") && strcmp(argv[1], "--shepherd"))) {
        fprintf(stderr, "usage: netrunner-shepherd --fork-server|--shepherd (fd 3: owner socket)\n");
        return 2;
    }
    if (tidy_fds() < 0 || pristine_signals() < 0) return 1;
    /* Leave the owner's process group: a terminal's Ctrl-C or a kill of the
     * owner's group must not take the watchers down with their owner (the
     * children, in groups of their own, would be orphaned). */
    if (getpgrp() != getpid() && setpgid(0, 0) < 0) complain("setpgid");
    if (strcmp(argv[1], "--fork-server") == 0) return run_fork_server(OWNER_FD);
    return run_shepherd(OWNER_FD);
}
