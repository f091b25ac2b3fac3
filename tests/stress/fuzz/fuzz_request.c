/*
 * libFuzzer harness for the shepherd's request parser (parse_request) and
 * its framing reader (read_request/inbuf_*), built with ASan + UBSan by
 * tests/stress/fuzz.py.  shepherd.c is included as it is, its main()
 * renamed, so the code fuzzed is exactly the code shipped.
 *
 * Each input is used twice:
 *   1. bytes 8.. as an OP_SPAWN payload, straight into parse_request;
 *   2. all of it as the byte stream an owner sends, written into a
 *      socketpair that is then shut down for writing, and read back by
 *      read_request (header checks, carry buffer, then parse_request).
 * A parse that succeeds must leave a request the rest of the shepherd can
 * rely on (check_request); anything else is a crash for libFuzzer.
 */
#define main shepherd_main
#include "../../../shepherd/shepherd.c"
#undef main

static void require(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "parse_request accepted a request that breaks: %s\n", what);
        abort();
    }
}

static void check_strv(const struct strv *s, const char *what) {
    require(s->n == 0 || (s->v != NULL && s->v[s->n] == NULL), what);
    for (size_t i = 0; i < s->n; i++) require(s->v[i] != NULL, what);
}

static void check_request(const struct request *rq) {
    check_strv(&rq->argv, "argv NULL-terminated");
    check_strv(&rq->env, "env NULL-terminated");
    check_strv(&rq->exec, "exec NULL-terminated");
    check_strv(&rq->cgroup_set, "cgroup_set NULL-terminated");
    require(rq->argv.n > 0 && rq->exec.n > 0, "argv and exec present");
    for (int i = 0; i < 3; i++) require(rq->mode[i] <= NR_STDIO_STDOUT, "stdio mode in range");
    require(rq->mode[0] != NR_STDIO_STDOUT && rq->mode[1] != NR_STDIO_STDOUT, "STDOUT mode only for stderr");
    require(rq->umask >= -1 && rq->umask <= 0777, "umask in range");
    require(rq->nrlimits >= 0 && rq->nrlimits <= MAX_RLIMITS, "rlimit count bounded");
    require(!rq->pty || (rq->winsize.ws_row > 0 && rq->winsize.ws_col > 0), "pty size non-zero");
    require(rq->cgroup == NULL || rq->cgroup[0] == '/', "cgroup path absolute");
    for (size_t i = 0; i < rq->cgroup_set.n; i++) {
        const char *entry = rq->cgroup_set.v[i];
        const char *eq = strchr(entry, '=');
        require(eq != NULL, "cgroup_set has '='");
        require(memchr(entry, '/', (size_t)(eq - entry)) == NULL, "cgroup_set file has no '/'");
    }
}

static void parse_payload(const uint8_t *data, size_t size) {
    if (size < NR_HEADER_SIZE) return;
    /* a copy of exactly the payload, so ASan sees any read past its end */
    size_t len = size - NR_HEADER_SIZE;
    uint8_t *payload = malloc(len ? len : 1);
    if (!payload) return;
    memcpy(payload, data + NR_HEADER_SIZE, len);
    struct request rq;
    memset(&rq, 0, sizeof rq);
    if (parse_request(payload, (uint32_t)len, &rq) == 0) check_request(&rq);
    request_free(&rq);
    free(payload);
}

static void read_stream(const uint8_t *data, size_t size) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) abort();
    int buf = 4 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    size_t sent = 0;
    while (sent < size) {
        ssize_t n = send(sv[0], data + sent, size - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0) break; /* larger than the socket takes: fuzz what went in */
        sent += (size_t)n;
    }
    shutdown(sv[0], SHUT_WR); /* EOF after the data: read_request never waits */
    struct inbuf in;
    struct request rq;
    memset(&in, 0, sizeof in);
    memset(&rq, 0, sizeof rq);
    if (read_request(sv[1], &in, &rq) == 0) check_request(&rq);
    request_free(&rq);
    inbuf_close_fds(&in);
    free(in.buf);
    close(sv[0]);
    close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 20)) return 0;
    parse_payload(data, size);
    read_stream(data, size);
    return 0;
}
