/*
 * cni-ipam-forward: the whereabouts executable when the node agent runs, in C.
 *
 * It does what src/cni_ipam/agent_client.py does before Python would have
 * started: send the CNI environment and stdin to `cni-ipam agent` over its
 * Unix socket as one line of JSON, then write the answer's bytes and exit
 * with its code.  It makes no decision of its own.  Anything it cannot
 * forward (a command other than ADD, DEL, CHECK, GC and STATUS, no agent, a
 * refused, slow or closed connection, an answer it cannot read) goes to the
 * Python launcher instead, with the original stdin, so a dead agent never
 * blocks a pod.
 *
 * The wire format is the Python launcher's, byte for byte
 * (agent_client.request_line and read_answer):
 *   request  {"plugin":"whereabouts","env":{CNI_* variables},"stdin":"...","answer":"bytes"}\n
 *   answer   <exit> <stdout length> <stderr length>\n, then stdout's bytes, then stderr's
 * In the request, bytes become text as Python's bytes.decode("utf-8",
 * "surrogateescape") does, and text is escaped as json's ensure_ascii does.
 * The answer's bytes are already what the Python launcher prints: the agent
 * encodes them as its sys.stdout and sys.stderr would in the C or C.UTF-8
 * locale (cni_ipam.agent.answer_bytes), so they are written as they come.
 *
 * The Python launcher is `.<plugin>-py` in the directory this program was
 * run from (argv[0], else /proc/self/exe): `cni-ipam install --native`
 * writes both.  C99 and libc only; built by native/build.sh.
 */
#define _GNU_SOURCE /* O_TMPFILE, SOCK_CLOEXEC, MSG_NOSIGNAL, syscall() */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef PLUGIN
#define PLUGIN "whereabouts"
#endif
#define DEFAULT_SOCKET "/run/cni-ipam/agent.sock" /* agent_client.DEFAULT_SOCKET */
#define ENV_SOCKET "CNI_IPAM_AGENT_SOCKET"       /* set to "" to never use the agent */
#define MAX_MESSAGE ((size_t)16 << 20)          /* agent_client.MAX_MESSAGE: either way, newline excluded */
#define MAX_STDIN ((size_t)4 << 20)             /* cni_ipam.cni.MAX_STDIN: every plugin refuses more */
#define MAX_HEAD 64                             /* agent_client.MAX_HEAD: the answer's first line, newline excluded */
#ifndef CONNECT_TIMEOUT_S
#define CONNECT_TIMEOUT_S 5 /* the agent's listen backlog stays full this long: it is wedged */
#endif
#ifndef ANSWER_TIMEOUT_MS
#define ANSWER_TIMEOUT_MS 60000 /* agent_client.TIMEOUT, for the whole exchange */
#endif
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 1U
#endif

extern char **environ;

/* A growing byte buffer that refuses to grow past its limit. */
struct buf {
    char *data;
    size_t len, cap, limit;
};

static int put(struct buf *b, const void *bytes, size_t n)
{
    if (n > b->limit - b->len)
        return -1;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *grown;
        while (cap < b->len + n)
            cap *= 2;
        if (cap > b->limit)
            cap = b->limit;
        grown = realloc(b->data, cap);
        if (!grown)
            return -1;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    return 0;
}

static int puts_(struct buf *b, const char *s) { return put(b, s, strlen(s)); }

/* ---- bytes to text: CPython's UTF-8 decoder with errors="surrogateescape" ----
 * One step at s: the length of a valid sequence (its code point in *cp), or, with *cp unset and
 * *valid 0, how many bytes make the invalid one: its longest valid prefix, at least one byte.
 * CPython (Objects/stringlib/codecs.h utf8_decode, Objects/unicodeobject.c unicode_decode_utf8)
 * turns each of those bytes b into U+DC00+b and goes on after them; overlong forms, surrogates and
 * code points above U+10FFFF are not valid, and a truncated sequence at the end is its prefix. */
static size_t decode_step(const unsigned char *s, size_t n, uint32_t *cp, int *valid)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t need, k;

    *valid = 0;
    if (c < 0x80) {
        *cp = c;
        *valid = 1;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf)
        need = 2;
    else if (c >= 0xe0 && c <= 0xef)
        need = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        need = 4;
    else
        return 1;
    if (c == 0xe0)
        lo = 0xa0; /* overlong */
    else if (c == 0xed)
        hi = 0x9f; /* surrogates */
    else if (c == 0xf0)
        lo = 0x90; /* overlong */
    else if (c == 0xf4)
        hi = 0x8f; /* above U+10FFFF */
    for (k = 1; k < need; k++) {
        if (k >= n || s[k] < lo || s[k] > hi)
            return k;
        lo = 0x80;
        hi = 0xbf;
    }
    if (need == 2)
        *cp = (uint32_t)(c & 0x1f) << 6 | (s[1] & 0x3f);
    else if (need == 3)
        *cp = (uint32_t)(c & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
    else
        *cp = (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[1] & 0x3f) << 12 | (uint32_t)(s[2] & 0x3f) << 6 |
              (s[3] & 0x3f);
    *valid = 1;
    return need;
}

/* One code point as json.dumps(ensure_ascii=True) writes it (Modules/_json.c ascii_escape_unichar). */
static int put_json_char(struct buf *b, uint32_t cp)
{
    char esc[16];

    switch (cp) {
    case '"': return puts_(b, "\\\"");
    case '\\': return puts_(b, "\\\\");
    case '\b': return puts_(b, "\\b");
    case '\f': return puts_(b, "\\f");
    case '\n': return puts_(b, "\\n");
    case '\r': return puts_(b, "\\r");
    case '\t': return puts_(b, "\\t");
    default: break;
    }
    if (cp >= 0x20 && cp <= 0x7e) {
        char c = (char)cp;
        return put(b, &c, 1);
    }
    if (cp >= 0x10000) {
        cp -= 0x10000;
        sprintf(esc, "\\u%04x\\u%04x", (unsigned)(0xd800 | (cp >> 10)), (unsigned)(0xdc00 | (cp & 0x3ff)));
    } else {
        sprintf(esc, "\\u%04x", (unsigned)cp);
    }
    return puts_(b, esc);
}

/* Bytes as the JSON string of their surrogateescape-decoded text. */
static int put_json_string(struct buf *b, const char *bytes, size_t n)
{
    const unsigned char *s = (const unsigned char *)bytes;
    size_t i = 0, k, step;
    uint32_t cp = 0;
    int valid;

    if (puts_(b, "\""))
        return -1;
    while (i < n) {
        step = decode_step(s + i, n - i, &cp, &valid);
        if (valid) {
            if (put_json_char(b, cp))
                return -1;
        } else {
            for (k = 0; k < step; k++)
                if (put_json_char(b, 0xdc00u + s[i + k]))
                    return -1;
        }
        i += step;
    }
    return puts_(b, "\"");
}

/* ---- the request ---- */

static int already_seen(char **entry, size_t key_len)
{
    char **earlier;

    for (earlier = environ; earlier != entry; earlier++)
        if (strncmp(*earlier, *entry, key_len + 1) == 0)
            return 1; /* os.environ keeps the first of duplicate names */
    return 0;
}

static int build_request(struct buf *req, const struct buf *in)
{
    char **entry;
    int first = 1;

    if (puts_(req, "{\"plugin\":") || put_json_string(req, PLUGIN, strlen(PLUGIN)) || puts_(req, ",\"env\":{"))
        return -1;
    for (entry = environ; *entry; entry++) {
        const char *eq = strchr(*entry, '=');
        size_t key_len;

        if (!eq || strncmp(*entry, "CNI_", 4) != 0)
            continue;
        key_len = (size_t)(eq - *entry);
        if (already_seen(entry, key_len))
            continue;
        if ((!first && puts_(req, ",")) || put_json_string(req, *entry, key_len) || puts_(req, ":") ||
            put_json_string(req, eq + 1, strlen(eq + 1)))
            return -1;
        first = 0;
    }
    if (puts_(req, "},\"stdin\":") || put_json_string(req, in->data ? in->data : "", in->len) ||
        puts_(req, ",\"answer\":\"bytes\"}"))
        return -1;
    req->limit = MAX_MESSAGE + 1;
    return puts_(req, "\n");
}

/* ---- the exchange ---- */

static long long now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int wait_for(int fd, short events, long long deadline)
{
    struct pollfd p;
    long long left;
    int ready;

    p.fd = fd;
    p.events = events;
    for (;;) {
        left = deadline - now_ms();
        if (left <= 0)
            return -1;
        ready = poll(&p, 1, (int)left);
        if (ready > 0)
            return 0;
        if (ready < 0 && errno != EINTR)
            return -1;
    }
}

/* The agent's answer as cni_ipam.agent.answer_bytes frames it: the bytes received (its first line, the
 * newline, stdout's bytes, stderr's), where stdout starts, both lengths and the exit code. */
struct answer {
    struct buf data;
    size_t body, out_len, err_len;
    int code;
};

/* One or more decimal digits at *p, their value in *value; -1 for none, or for a value above ``most``. */
static int digits(const char **p, const char *end, unsigned long long most, unsigned long long *value)
{
    const char *start = *p;

    *value = 0;
    for (; *p < end && **p >= '0' && **p <= '9'; (*p)++) {
        *value = *value * 10 + (unsigned)(**p - '0');
        if (*value > most)
            return -1;
    }
    return *p == start ? -1 : 0;
}

/* The first line, "<exit> <stdout length> <stderr length>", as agent_client.read_answer takes it: single
 * spaces, digits only, a minus sign on the exit code only, both outputs within MAX_MESSAGE.  An exit code
 * beyond an int is refused too (the agent sends a plugin's, a small one). */
static int parse_head(const char *p, const char *end, struct answer *a)
{
    unsigned long long code, out_len, err_len;
    int negative = p < end && *p == '-';

    p += negative;
    if (digits(&p, end, (unsigned long long)INT_MAX + (unsigned)negative, &code) || p == end || *p++ != ' ' ||
        digits(&p, end, MAX_MESSAGE, &out_len) || p == end || *p++ != ' ' ||
        digits(&p, end, MAX_MESSAGE, &err_len) || p != end || out_len + err_len > MAX_MESSAGE)
        return -1;
    a->code = negative ? (int)-(long long)code : (int)code;
    a->out_len = (size_t)out_len;
    a->err_len = (size_t)err_len;
    return 0;
}

/* Up to ``most`` more bytes of the answer (at least one); -1 when it closed, failed or the deadline passed. */
static int receive(int fd, struct buf *data, size_t most, long long deadline)
{
    char chunk[65536];
    ssize_t n;

    for (;;) {
        if (wait_for(fd, POLLIN, deadline))
            return -1;
        n = recv(fd, chunk, most < sizeof chunk ? most : sizeof chunk, MSG_DONTWAIT);
        if (n > 0)
            return put(data, chunk, (size_t)n);
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            return -1;
    }
}

/* Send the request, then read the whole answer into *a; -1 for no answer, or one the agent never sends:
 * a first line over MAX_HEAD bytes or not three integers, outputs shorter or longer than it says. */
static int exchange(int fd, const struct buf *req, struct answer *a)
{
    long long deadline = now_ms() + ANSWER_TIMEOUT_MS;
    size_t sent = 0, whole;
    const char *newline = NULL;
    ssize_t n;

    while (sent < req->len) {
        if (wait_for(fd, POLLOUT, deadline))
            return -1;
        n = send(fd, req->data + sent, req->len - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return -1;
        if (n > 0)
            sent += (size_t)n;
    }
    a->data.limit = MAX_HEAD + 1 + MAX_MESSAGE;
    while (!newline) {
        if (a->data.len > MAX_HEAD || receive(fd, &a->data, a->data.limit - a->data.len, deadline))
            return -1;
        newline = memchr(a->data.data, '\n', a->data.len);
    }
    if ((size_t)(newline - a->data.data) > MAX_HEAD || parse_head(a->data.data, newline, a))
        return -1;
    a->body = (size_t)(newline - a->data.data) + 1;
    whole = a->body + a->out_len + a->err_len;
    while (a->data.len < whole)
        if (receive(fd, &a->data, whole - a->data.len, deadline))
            return -1;
    return a->data.len == whole ? 0 : -1; /* more than it said came with its first line */
}

static int ask_agent(const char *path, const struct buf *req, struct answer *answer)
{
    struct sockaddr_un addr;
    struct timeval connect_timeout = {CONNECT_TIMEOUT_S, 0};
    size_t len = strlen(path);
    int fd, rc = -1;

    if (len > sizeof addr.sun_path)
        return -1; /* Python: "AF_UNIX path too long" */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, len);
    /* A blocking connect to a full backlog waits SO_SNDTIMEO (Linux unix_stream_connect). */
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &connect_timeout, sizeof connect_timeout) == 0 &&
        connect(fd, (struct sockaddr *)&addr, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) == 0)
        rc = exchange(fd, req, answer);
    close(fd);
    return rc;
}

/* ---- the Python launcher, with the original stdin ---- */

static void write_all(int fd, const char *data, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, data, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        data += w;
        n -= (size_t)w;
    }
}

static void fail(const char *what, const char *path, int error)
{
    struct buf msg = {NULL, 0, 0, 1 << 16}, text = {NULL, 0, 0, 1 << 16};

    if (puts_(&text, "cni-ipam forwarder: ") || puts_(&text, what) || puts_(&text, " ") || puts_(&text, path) ||
        puts_(&text, ": ") || puts_(&text, strerror(error)))
        text.len = 0;
    if (puts_(&msg, "{\"code\":999,\"msg\":") || put_json_string(&msg, text.data, text.len) || puts_(&msg, "}\n"))
        msg.len = 0;
    write_all(1, msg.data, msg.len);
    write_all(2, text.data, text.len);
    write_all(2, "\n", 1);
    free(msg.data);
    free(text.data);
    exit(1);
}

/* A file holding the stdin bytes read so far, then whatever of stdin is left; at offset 0. */
static int stdin_file(const struct buf *in, int rest)
{
    char chunk[65536];
    ssize_t n;
    int fd = (int)syscall(SYS_memfd_create, "cni-stdin", MFD_CLOEXEC);

    if (fd < 0)
        fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        int p[2];

        if (rest || in->len > 65536 || pipe(p)) /* a pipe holds 64 KiB unread */
            return -1;
        write_all(p[1], in->data, in->len);
        close(p[1]);
        return p[0];
    }
    write_all(fd, in->data, in->len);
    while (rest && ((n = read(0, chunk, sizeof chunk)) > 0 || (n < 0 && errno == EINTR)))
        if (n > 0)
            write_all(fd, chunk, (size_t)n);
    if (lseek(fd, 0, SEEK_SET) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void launcher_path(const char *argv0, char *path, size_t size)
{
    char self[PATH_MAX];
    const char *from = argv0, *slash;
    ssize_t n;

    if (!from || !strchr(from, '/')) {
        n = readlink("/proc/self/exe", self, sizeof self - 1);
        self[n > 0 ? n : 0] = '\0';
        from = self;
    }
    slash = strrchr(from, '/');
    if (!slash || (size_t)snprintf(path, size, "%.*s/.%s-py", (int)(slash - from), from, PLUGIN) >= size)
        fail("cannot find the Python launcher beside", from, slash ? ENAMETOOLONG : ENOENT);
}

/* exec the Python launcher; with ``in`` (a forwarded command the agent did not answer), stdin becomes a file
 * of ``in`` and the rest of stdin if ``rest``, and CNI_IPAM_AGENT_SOCKET="" keeps the launcher from asking
 * the agent again: the Python plugin does the work in that process. */
static void run_python(char **argv, const struct buf *in, int rest)
{
    char path[PATH_MAX];
    char *fallback_argv[2] = {NULL, NULL};

    launcher_path(argv[0], path, sizeof path);
    if (in) {
        int fd = stdin_file(in, rest);

        if (fd < 0 || dup2(fd, 0) < 0)
            fail("cannot hand stdin to", path, errno);
        close(fd);
        if (setenv(ENV_SOCKET, "", 1))
            fail("cannot set " ENV_SOCKET " for", path, errno);
    }
    if (!argv[0])
        argv = fallback_argv;
    argv[0] = path;
    execv(path, argv);
    fail("cannot run", path, errno);
}

static int forwarded(const char *command)
{
    static const char *const commands[] = {"ADD", "DEL", "CHECK", "GC", "STATUS"};
    size_t i;

    for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (command && strcmp(command, commands[i]) == 0)
            return 1;
    return 0;
}

/* All of stdin up to MAX_STDIN: 1 if it all came, 0 if there is more (or it failed).  At most MAX_STDIN + 1
 * bytes are held, as the Python plugin reads them: a larger stdin goes whole to it, and it refuses it (code 6)
 * as it does alone. */
static int read_stdin(struct buf *in)
{
    char chunk[65536];
    size_t want;
    ssize_t n;

    for (;;) {
        want = MAX_STDIN + 1 - in->len;
        n = read(0, chunk, want < sizeof chunk ? want : sizeof chunk);
        if (n == 0)
            return 1;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || put(in, chunk, (size_t)n) || in->len > MAX_STDIN)
            return 0; /* every byte read is kept: the Python plugin gets them all */
    }
}

int main(int argc, char **argv)
{
    const char *socket_path = getenv(ENV_SOCKET);
    struct buf in = {NULL, 0, 0, MAX_STDIN + 1}, req = {NULL, 0, 0, MAX_MESSAGE};
    struct answer answer = {{NULL, 0, 0, 0}, 0, 0, 0, 0};

    (void)argc;
    if (!socket_path)
        socket_path = DEFAULT_SOCKET;
    if (!forwarded(getenv("CNI_COMMAND")) || !*socket_path)
        run_python(argv, NULL, 0);
    if (!read_stdin(&in))
        run_python(argv, &in, 1);
    if (build_request(&req, &in) || ask_agent(socket_path, &req, &answer))
        run_python(argv, &in, 0);
    write_all(1, answer.data.data + answer.body, answer.out_len);
    write_all(2, answer.data.data + answer.body + answer.out_len, answer.err_len);
    free(in.data);
    free(req.data);
    free(answer.data.data);
    return answer.code; /* as sys.exit(code): the status is its low 8 bits */
}
