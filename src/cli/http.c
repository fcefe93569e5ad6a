/* http.c - a minimal HTTP/1.1 client: one POST per connection over plain
 * TCP, every wait bounded by poll, for the uploads of `spprof record`. No
 * TLS: the command links nothing beyond libc (see README, --upload). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "upload.h"

#define HTTP_ANSWER_MAX 4096  /* of the answer, only the status and a hint are used */

int spp_url_parse(const char *url, spp_url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof(*u));
    if (strncmp(url, "https://", 8) == 0) {
        snprintf(err, errlen,
                 "%s: the spprof command speaks plain http:// only (it links no TLS library); "
                 "send to a local agent or proxy that forwards over HTTPS, or upload from "
                 "Python with Profile.upload(), which supports https://",
                 url);
        return -1;
    }
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "%s: the upload URL must start with http://", url);
        return -1;
    }
    const char *h = url + 7, *end = h + strcspn(h, "/?#");
    if (*end == '#' || strchr(h, '#')) {
        snprintf(err, errlen, "%s: an upload URL has no #fragment", url);
        return -1;
    }
    if (memchr(h, '@', (size_t)(end - h))) {
        snprintf(err, errlen, "%s: user:password@ in the URL is not supported", url);
        return -1;
    }
    const char *port = NULL, *hend = end;
    if (*h == '[') {
        const char *close = memchr(h, ']', (size_t)(end - h));
        if (!close) {
            snprintf(err, errlen, "%s: unclosed [ in the host", url);
            return -1;
        }
        if (close + 1 < end) {
            if (close[1] != ':') {
                snprintf(err, errlen, "%s: unexpected text after ]", url);
                return -1;
            }
            port = close + 2;
        }
        h++;
        hend = close;
    } else {
        const char *colon = memchr(h, ':', (size_t)(end - h));
        if (colon) {
            port = colon + 1;
            hend = colon;
        }
    }
    size_t hlen = (size_t)(hend - h);
    if (hlen == 0 || hlen >= sizeof(u->host)) {
        snprintf(err, errlen, "%s: no host in the URL", url);
        return -1;
    }
    memcpy(u->host, h, hlen);
    if (port) {
        size_t plen = (size_t)(end - port);
        long v = 0;
        for (size_t i = 0; i < plen; i++) {
            if (port[i] < '0' || port[i] > '9' || v > 65535) {
                v = -1;
                break;
            }
            v = v * 10 + (port[i] - '0');
        }
        if (plen == 0 || v <= 0 || v > 65535) {
            snprintf(err, errlen, "%s: the port must be a number from 1 to 65535", url);
            return -1;
        }
        snprintf(u->port, sizeof(u->port), "%ld", v);
    } else {
        snprintf(u->port, sizeof(u->port), "80");
    }
    const char *path = *end ? end : "/";
    if (strlen(path) + (*path == '?' ? 1 : 0) >= sizeof(u->path)) {
        snprintf(err, errlen, "%s: the URL is too long", url);
        return -1;
    }
    for (const char *c = path; *c; c++) {
        if ((unsigned char)*c <= ' ' || *c == 0x7f) {
            snprintf(err, errlen, "%s: spaces and control characters must be %%-encoded in a URL",
                     url);
            return -1;
        }
    }
    snprintf(u->path, sizeof(u->path), "%s%s", *path == '?' ? "/" : "", path);
    return 0;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits up to ms for events on fd, through signals. 1 ready, 0 timed out,
 * -1 error (errno). */
static int wait_fd(int fd, short events, int ms)
{
    uint64_t until = mono_ms() + (uint64_t)ms;
    for (;;) {
        uint64_t now = mono_ms();
        int left = now >= until ? 0 : (int)(until - now);
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r;
        return 1;
    }
}

/* The wait allowed now: io_ms, but no further than deadline (a server
 * that answers a byte at a time must not hold a request for hours). */
static int budget(int io_ms, uint64_t deadline)
{
    uint64_t now = mono_ms();
    if (now >= deadline)
        return 0;
    return deadline - now < (uint64_t)io_ms ? (int)(deadline - now) : io_ms;
}

static void fail(spp_http_result *r, int kind, const char *fmt, const char *what)
{
    r->kind = kind;
    snprintf(r->detail, sizeof(r->detail), fmt, what);
}

/* Connects to one address within ms. Returns the socket, or -1 with errno
 * (ETIMEDOUT when the time ran out). */
static int connect_one(const struct addrinfo *a, int ms)
{
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0)
        return -1;
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
        return fd;
    if (errno != EINPROGRESS)
        goto bad;
    int w = wait_fd(fd, POLLOUT, ms);
    if (w <= 0) {
        if (w == 0)
            errno = ETIMEDOUT;
        goto bad;
    }
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
        goto bad;
    if (soerr) {
        errno = soerr;
        goto bad;
    }
    return fd;
bad:;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

static int send_all(int fd, const char *p, size_t n, int io_ms, uint64_t deadline)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(fd, POLLOUT, budget(io_ms, deadline));
            if (r <= 0) {
                if (r == 0)
                    errno = ETIMEDOUT;
                return -1;
            }
            continue;
        }
        return -1;
    }
    return 0;
}

/* The start of the server's answer body, on one line, for the message. */
static void answer_hint(const char *body, size_t n, char *out, size_t cap)
{
    size_t j = 0;
    for (size_t i = 0; i < n && j + 1 < cap && j < 160; i++) {
        unsigned char c = (unsigned char)body[i];
        if (c == '\r' || c == '\n' || c == '\t')
            c = ' ';
        if (c < ' ' || c >= 0x7f)
            c = '?';
        if (c == ' ' && (j == 0 || out[j - 1] == ' '))
            continue;
        out[j++] = (char)c;
    }
    while (j && out[j - 1] == ' ')
        j--;
    out[j] = '\0';
}

/* Reads the answer (status line, headers and the start of the body) until
 * the headers and Content-Length bytes of body are in, the server closes,
 * or HTTP_ANSWER_MAX bytes. Returns the bytes read, or -1 (errno). */
static ssize_t read_answer(int fd, char *buf, size_t cap, int io_ms, uint64_t deadline)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r > 0) {
            n += (size_t)r;
            buf[n] = '\0';
            const char *eoh = strstr(buf, "\r\n\r\n");
            if (eoh) {
                /* Enough once the body announced is in (or none is). */
                const char *cl = NULL;
                for (const char *l = strstr(buf, "\r\n"); l && l < eoh; l = strstr(l + 2, "\r\n"))
                    if (strncasecmp(l + 2, "Content-Length:", 15) == 0)
                        cl = l + 17;
                if (cl && (size_t)(buf + n - (eoh + 4)) >= (size_t)strtoull(cl, NULL, 10))
                    break;
            }
            continue;
        }
        if (r == 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int w = wait_fd(fd, POLLIN, budget(io_ms, deadline));
            if (w <= 0) {
                if (w == 0)
                    errno = ETIMEDOUT;
                return n ? (ssize_t)n : -1;
            }
            continue;
        }
        return n ? (ssize_t)n : -1;
    }
    buf[n] = '\0';
    return (ssize_t)n;
}

int spp_http_post(const spp_url *u, const char *target, const char *content_type,
                  const char *body, size_t len, int connect_ms, int io_ms, spp_http_result *r)
{
    memset(r, 0, sizeof(*r));
    int fd = -1, rc = -1;
    char *head = NULL, *answer = NULL;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(u->host, u->port, &hints, &res);
    if (g != 0) {
        fail(r, SPP_HTTP_RESOLVE, "cannot resolve the host: %s", gai_strerror(g));
        goto out;
    }
    int e = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = connect_one(a, connect_ms);
        if (fd < 0)
            e = errno;
    }
    if (fd < 0) {
        fail(r, SPP_HTTP_CONNECT, "cannot connect: %s",
             e == ETIMEDOUT ? "no answer (timed out)" : strerror(e));
        goto out;
    }
    /* IPv6 literals go back in brackets in the Host header. */
    int v6 = strchr(u->host, ':') != NULL;
    size_t cap = strlen(target) + strlen(u->host) + strlen(content_type) + 256;
    head = malloc(cap);
    answer = malloc(HTTP_ANSWER_MAX);
    if (!head || !answer) {
        fail(r, SPP_HTTP_SEND, "%s", "out of memory");
        goto out;
    }
    int hn = snprintf(head, cap,
                      "POST %s HTTP/1.1\r\nHost: %s%s%s%s%s\r\nUser-Agent: spprof\r\n"
                      "Content-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                      target, v6 ? "[" : "", u->host, v6 ? "]" : "",
                      strcmp(u->port, "80") ? ":" : "", strcmp(u->port, "80") ? u->port : "",
                      content_type, len);
    ssize_t n;
    /* Sending and reading the answer, in all: twice one wait. */
    uint64_t deadline = mono_ms() + 2 * (uint64_t)io_ms;
    if (send_all(fd, head, (size_t)hn, io_ms, deadline) < 0 ||
        send_all(fd, body, len, io_ms, deadline) < 0) {
        /* A server that refuses early may close before reading it all; its
         * answer, if one came, says more than the broken pipe. */
        e = errno;
        n = read_answer(fd, answer, HTTP_ANSWER_MAX, 0, deadline);
        if (n <= 0 || strncmp(answer, "HTTP/", 5) != 0) {
            fail(r, SPP_HTTP_SEND, "sending failed: %s",
                 e == ETIMEDOUT ? "the server stopped reading (timed out)" : strerror(e));
            goto out;
        }
    } else {
        n = read_answer(fd, answer, HTTP_ANSWER_MAX, io_ms, deadline);
    }
    if (n <= 0) {
        fail(r, SPP_HTTP_RECEIVE, "no answer: %s",
             n == 0 ? "the server closed the connection"
                    : errno == ETIMEDOUT ? "timed out" : strerror(errno));
        goto out;
    }
    int status = 0;
    char reason[64] = "";
    if (sscanf(answer, "HTTP/%*d.%*d %3d %63[^\r\n]", &status, reason) < 1 || status < 100 ||
        status > 599) {
        char hint[200];
        answer_hint(answer, (size_t)n, hint, sizeof(hint));
        fail(r, SPP_HTTP_PROTOCOL, "the answer is not HTTP: %s", hint);
        goto out;
    }
    r->status = status;
    /* The reason phrase is the server's: no control bytes to the terminal. */
    for (char *c = reason; *c; c++)
        if ((unsigned char)*c < ' ' || (unsigned char)*c >= 0x7f)
            *c = '?';
    if (status < 200 || status > 299) {
        const char *eoh = strstr(answer, "\r\n\r\n");
        char hint[200] = "";
        if (eoh)
            answer_hint(eoh + 4, (size_t)(answer + n - (eoh + 4)), hint, sizeof(hint));
        r->kind = SPP_HTTP_STATUS;
        snprintf(r->detail, sizeof(r->detail), "HTTP %d%s%s%s%s", status, reason[0] ? " " : "",
                 reason, hint[0] ? ": " : "", hint);
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (res)
        freeaddrinfo(res);
    free(head);
    free(answer);
    return rc;
}
