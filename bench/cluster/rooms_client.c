/* Members of many small rooms for bench/cluster.py --rooms (bench/cluster/rooms_app.py).

   rooms_client -p PORT -a FIRST_ROOM -b END_ROOM -m MEMBERS -K ROUNDS
                [-s SOURCES] [-x INFLIGHT] [-T DEADLINE_S] [-S STALL_S]

   Opens MEMBERS WebSocket connections to /m/{room} for every room in [FIRST_ROOM, END_ROOM)
   (one epoll loop, at most INFLIGHT handshakes at a time, local addresses 127.0.0.1 ..
   127.0.0.SOURCES in turn so that more than one address's ephemeral ports can be used), waits
   for every member's "j" (joined), prints "READY conns=N" and then reads: every member must
   get "{room}:0" .. "{room}:ROUNDS-1" in order, each exactly once (anything else is a
   mismatch; the first few are printed on stderr). Pings are answered. When every member has
   its ROUNDS messages, or nothing arrived for STALL_S seconds after the first delivery, or
   DEADLINE_S passed, it prints
     RESULT ok=0|1 conns=N delivered=D expected=E mismatches=M errors=X first_ns=F last_ns=L
   (F, L: CLOCK_MONOTONIC of the first and the last delivery, the clock Python's
   time.monotonic_ns() reads; READY and RESULT also give cpu_us, this process's CPU time so far)
   and exits. Build: cc -O2 -o rooms_client rooms_client.c */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum { S_IDLE, S_CONNECTING, S_HANDSHAKE, S_JOINING, S_OPEN, S_DEAD };
#define BUF 512

typedef struct {
    int fd, state, room, next, len;
    unsigned char buf[BUF];
} conn_t;

static conn_t *conns;
static int nconns, port, first_room, end_room, members = 10, rounds = 10, sources = 4, inflight_max = 256;
static double deadline_s = 300, stall_s = 20;
static long long delivered, expected, mismatches, errors;
static uint64_t first_ns, last_ns;
static int efd, joined, inflight, started, shown;

static long long cpu_us(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000LL + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void fail(conn_t *c, const char *why) {
    if (c->state == S_DEAD) return;
    if (shown++ < 5) fprintf(stderr, "member %ld (room %d): %s\n", (long)(c - conns), c->room, why);
    errors++;
    if (c->state == S_CONNECTING || c->state == S_HANDSHAKE || c->state == S_JOINING) inflight--;
    c->state = S_DEAD;
    close(c->fd);
}

static void mismatch(conn_t *c, const unsigned char *p, int n) {
    mismatches++;
    if (shown++ < 5)
        fprintf(stderr, "member %ld (room %d) expected %d:%d, got %.*s\n", (long)(c - conns), c->room, c->room,
                c->next, n, (const char *)p);
}

static void start_connect(conn_t *c, int i) {
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
    int one = 1;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) { perror("socket"); exit(2); }
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(i % sources));
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) { perror("bind"); exit(2); }
    dst.sin_addr.s_addr = htonl(0x7f000001u);
    dst.sin_port = htons((uint16_t)port);
    c->state = S_CONNECTING;
    inflight++;
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) { fail(c, strerror(errno)); return; }
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
    epoll_ctl(efd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void send_upgrade(conn_t *c, int i) {
    char req[256];
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) { fail(c, strerror(err)); return; }
    int n = snprintf(req, sizeof req,
                     "GET /m/%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: cm9vbXMtY2xpZW50LWtleQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", c->room, port);
    if (write(c->fd, req, (size_t)n) != n) { fail(c, "short write of the upgrade request"); return; }
    c->state = S_HANDSHAKE;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(efd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void pong(conn_t *c, const unsigned char *p, int n) {
    unsigned char out[2 + 4 + 125];
    out[0] = 0x8A;
    out[1] = (unsigned char)(0x80 | n);
    memset(out + 2, 0, 4);  /* a zero mask: the payload goes as is */
    memcpy(out + 6, p, (size_t)n);
    if (write(c->fd, out, (size_t)(6 + n)) != 6 + n) fail(c, "short write of a pong");
}

/* one text frame's payload from the server */
static void on_text(conn_t *c, const unsigned char *p, int n) {
    if (c->state == S_JOINING) {
        if (n == 1 && p[0] == 'j') { c->state = S_OPEN; joined++; inflight--; }
        else mismatch(c, p, n);
        return;
    }
    char want[32];
    int wn = snprintf(want, sizeof want, "%d:%d", c->room, c->next);
    if (wn != n || memcmp(want, p, (size_t)n) != 0 || c->next >= rounds) { mismatch(c, p, n); return; }
    c->next++;
    uint64_t t = now_ns();
    if (!delivered) first_ns = t;
    last_ns = t;
    delivered++;
}

static void on_frames(conn_t *c) {
    int off = 0;
    while (c->len - off >= 2) {
        unsigned char *f = c->buf + off;
        int op = f[0] & 0x0f, n = f[1] & 0x7f, h = 2;
        if (f[1] & 0x80) { fail(c, "masked frame from the server"); return; }
        if (n == 126) {
            if (c->len - off < 4) break;
            n = (f[2] << 8) | f[3];
            h = 4;
        } else if (n == 127) { fail(c, "frame too long"); return; }
        if (h + n > BUF) { fail(c, "frame larger than the buffer"); return; }
        if (c->len - off < h + n) break;
        if (op == 1) on_text(c, f + h, n);
        else if (op == 9) pong(c, f + h, n);
        else if (op == 8) { fail(c, "closed by the server"); return; }
        else if (op != 10) mismatch(c, f + h, n);
        if (c->state == S_DEAD) return;
        off += h + n;
    }
    memmove(c->buf, c->buf + off, (size_t)(c->len - off));
    c->len -= off;
}

static void on_readable(conn_t *c) {
    for (;;) {
        ssize_t r = read(c->fd, c->buf + c->len, (size_t)(BUF - c->len));
        if (r == 0) { fail(c, "connection closed"); return; }
        if (r < 0) {
            if (errno != EAGAIN) fail(c, strerror(errno));
            return;
        }
        c->len += (int)r;
        if (c->state == S_HANDSHAKE) {
            unsigned char *end = memmem(c->buf, (size_t)c->len, "\r\n\r\n", 4);
            if (!end) {
                if (c->len == BUF) fail(c, "response head too long");
                continue;
            }
            if (c->len < 12 || memcmp(c->buf, "HTTP/1.1 101", 12) != 0) { fail(c, "upgrade refused"); return; }
            int head = (int)(end - c->buf) + 4;
            memmove(c->buf, c->buf + head, (size_t)(c->len - head));
            c->len -= head;
            c->state = S_JOINING;
        }
        on_frames(c);
        if (c->state == S_DEAD || r < BUF) return;
    }
}

int main(int argc, char **argv) {
    int o;
    while ((o = getopt(argc, argv, "p:a:b:m:K:s:x:T:S:")) != -1) {
        switch (o) {
        case 'p': port = atoi(optarg); break;
        case 'a': first_room = atoi(optarg); break;
        case 'b': end_room = atoi(optarg); break;
        case 'm': members = atoi(optarg); break;
        case 'K': rounds = atoi(optarg); break;
        case 's': sources = atoi(optarg); break;
        case 'x': inflight_max = atoi(optarg); break;
        case 'T': deadline_s = atof(optarg); break;
        case 'S': stall_s = atof(optarg); break;
        default: fprintf(stderr, "usage: see the comment at the top of rooms_client.c\n"); return 2;
        }
    }
    if (port <= 0 || end_room <= first_room || members < 1 || rounds < 1 || sources < 1 || sources > 250) {
        fprintf(stderr, "usage: rooms_client -p PORT -a FIRST_ROOM -b END_ROOM -m MEMBERS -K ROUNDS ...\n");
        return 2;
    }
    nconns = (end_room - first_room) * members;
    expected = (long long)nconns * rounds;
    conns = calloc((size_t)nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) conns[i].room = first_room + i / members;
    efd = epoll_create1(0);
    struct epoll_event evs[512];
    uint64_t t0 = now_ns(), last_progress = t0;
    long long seen = 0;
    int ready = 0;
    while (1) {
        while (started < nconns && inflight < inflight_max) { start_connect(&conns[started], started); started++; }
        if (!ready && joined + errors >= nconns) {
            printf("READY conns=%d joined=%d errors=%lld cpu_us=%lld\n", nconns, joined, errors, cpu_us());
            fflush(stdout);
            ready = 1;
        }
        int n = epoll_wait(efd, evs, 512, 200);
        for (int k = 0; k < n; k++) {
            conn_t *c = &conns[evs[k].data.u32];
            if (c->state == S_CONNECTING) send_upgrade(c, (int)evs[k].data.u32);
            else if (c->state != S_DEAD) on_readable(c);
        }
        uint64_t t = now_ns();
        if (delivered != seen) { seen = delivered; last_progress = t; }
        int done = ready && delivered >= expected;
        int stalled = delivered && (double)(t - last_progress) / 1e9 > stall_s;
        if (done || stalled || (double)(t - t0) / 1e9 > deadline_s) break;
    }
    int ok = delivered == expected && !mismatches && !errors;
    printf("RESULT ok=%d conns=%d joined=%d delivered=%lld expected=%lld mismatches=%lld errors=%lld "
           "first_ns=%llu last_ns=%llu cpu_us=%lld\n", ok, nconns, joined, delivered, expected, mismatches, errors,
           (unsigned long long)first_ns, (unsigned long long)last_ns, cpu_us());
    fflush(stdout);
    return ok ? 0 : 1;
}
