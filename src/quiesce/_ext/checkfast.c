/* quiesce._checkfast: the per-check I/O of plain `http` and `tcp` health monitors, in C.
 *
 * Theory of operation
 * -------------------
 * An Engine owns one epoll set. `start(batch, now, mono)` starts every check of a batch
 * (socket(SOCK_NONBLOCK), connect, send the request, register the socket); `poll(mono)`
 * handles every socket that is ready (one epoll_wait, non-blocking) and `expire(now, mono)`
 * every check whose deadline has passed. Each returns the checks that ended, as pairs
 * (token, result): `token` is whatever the caller passed in the batch, `result` an instance
 * of the result type given to the Engine (quiesce.core.checks.CheckResult), made here
 * without running its __init__ (its slots are set directly: the Engine checks at
 * construction that it is a slots dataclass with exactly those fields and no
 * __post_init__), with `monitor` read from the token.
 *
 * The Engine never reads a clock: the caller passes `now` (the event loop's time, in which
 * deadlines are kept), `mono` (its injectable clock's monotonic time, for latency) and `at`
 * (its wall time, the result's `at`).
 *
 * Classification is Rules.classify, the same rules as quiesce/health/classify.py
 * (HttpRules.classify/complete, classify_tcp, stream_reply_complete) and probes/base.describe;
 * tests/health/test_checkfast.py checks that they agree on random replies and rules.
 * A socket is closed with linger 0 (RST) when a reply was awaited or nothing was sent, as the
 * Python probe does.
 */
#define _GNU_SOURCE /* memmem */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define WINDOW 2048
#define MAX_EVENTS 1024

enum { V_PASS, V_FAIL, V_MAINTENANCE, N_VERDICTS };
enum {
    RS_OK,
    RS_MAINTENANCE_CODE,
    RS_MAINTENANCE_PAYLOAD,
    RS_CODE_MISMATCH,
    RS_PAYLOAD_MISMATCH,
    RS_REFUSED,
    RS_RESET,
    RS_CONNECTION_ERROR,
    RS_TIMEOUT,
    RS_HOST_UNREACHABLE,
    RS_MALFORMED,
    N_REASONS
};

static const char *const REASON_TEXT[N_REASONS] = {
    "ok",
    "maintenance response code match",
    "maintenance payload content match",
    "response code mismatch",
    "payload content mismatch",
    "connection refused",
    "connection reset",
    "connection error",
    "timeout",
    "host unreachable",
    "malformed response",
};

/* ---------------------------------------------------------------------------------------- */
/* Rules                                                                                     */

enum { KIND_HTTP = 0, KIND_TCP = 1 };

typedef struct {
    PyObject_HEAD
    int kind;
    int reads; /* whether a check waits for a reply at all */
    unsigned char accept[600];
    unsigned char maint_code[600];
    PyObject *maintenance; /* bytes or NULL */
    PyObject *expected;    /* bytes or NULL */
} RulesObject;

typedef struct {
    int verdict;
    int reason;
    int status; /* -1: none */
} Outcome;

static int is_ws(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c';
}

/* HTTP/1.x status code of the first line within the window, or -1 (classify.parse_status). */
static int parse_status(const unsigned char *r, Py_ssize_t len) {
    if (len > WINDOW) len = WINDOW;
    const unsigned char *nl = memchr(r, '\n', (size_t)len);
    Py_ssize_t end = nl ? nl - r : len;
    Py_ssize_t i = 0;
    while (i < end && is_ws(r[i])) i++;
    Py_ssize_t t0 = i;
    while (i < end && !is_ws(r[i])) i++;
    Py_ssize_t t0len = i - t0;
    while (i < end && is_ws(r[i])) i++;
    Py_ssize_t t1 = i;
    while (i < end && !is_ws(r[i])) i++;
    Py_ssize_t t1len = i - t1;
    if (t0len == 0 || t1len == 0) return -1;
    if (t0len < 5 || memcmp(r + t0, "HTTP/", 5) != 0) return -1;
    if (t1len != 3) return -1;
    int v = 0;
    for (int k = 0; k < 3; k++) {
        unsigned char c = r[t1 + k];
        if (c < '0' || c > '9') return -1;
        v = v * 10 + (c - '0');
    }
    return (v >= 100 && v <= 599) ? v : -1;
}

static int in_window(const unsigned char *r, Py_ssize_t len, PyObject *needle) {
    Py_ssize_t n = PyBytes_GET_SIZE(needle);
    if (len > WINDOW) len = WINDOW;
    if (n == 0) return 1;
    if (n > len) return 0;
    return memmem(r, (size_t)len, PyBytes_AS_STRING(needle), (size_t)n) != NULL;
}

static Outcome classify(RulesObject *rules, const unsigned char *r, Py_ssize_t len, int complete) {
    Outcome o = {V_PASS, RS_OK, -1};
    if (len > WINDOW) len = WINDOW;
    if (rules->kind == KIND_HTTP) {
        int status = parse_status(r, len);
        o.status = status;
        if (status >= 0 && rules->maint_code[status]) {
            o.verdict = V_MAINTENANCE, o.reason = RS_MAINTENANCE_CODE;
        } else if (rules->maintenance && in_window(r, len, rules->maintenance)) {
            o.verdict = V_MAINTENANCE, o.reason = RS_MAINTENANCE_PAYLOAD;
        } else if (status < 0) {
            o.verdict = V_FAIL, o.reason = RS_MALFORMED;
        } else if (!rules->accept[status]) {
            o.verdict = V_FAIL, o.reason = RS_CODE_MISMATCH;
        } else if (rules->expected && !in_window(r, len, rules->expected)) {
            o.verdict = V_FAIL, o.reason = RS_PAYLOAD_MISMATCH;
        }
        return o;
    }
    if (rules->maintenance && in_window(r, len, rules->maintenance)) {
        o.verdict = V_MAINTENANCE, o.reason = RS_MAINTENANCE_PAYLOAD;
    } else if (!rules->expected || in_window(r, len, rules->expected)) {
        /* pass */
    } else if (len == 0 && !complete) {
        o.verdict = V_FAIL, o.reason = RS_TIMEOUT;
    } else {
        o.verdict = V_FAIL, o.reason = RS_PAYLOAD_MISMATCH;
    }
    return o;
}

/* More bytes could not change classify() (HttpRules.complete, stream_reply_complete). */
static int reply_complete(RulesObject *rules, const unsigned char *r, Py_ssize_t len) {
    if (len >= WINDOW) return 1;
    if (rules->kind == KIND_HTTP) {
        if (!rules->maintenance && !rules->expected)
            return memchr(r, '\n', (size_t)len) != NULL && parse_status(r, len) >= 0;
        int status = parse_status(r, len);
        if (status < 0) return 0;
        if (rules->maint_code[status]) return 1;
        if (rules->maintenance) return in_window(r, len, rules->maintenance);
        return !rules->accept[status] || in_window(r, len, rules->expected);
    }
    if (rules->maintenance) return in_window(r, len, rules->maintenance);
    return !rules->expected || in_window(r, len, rules->expected);
}

/* probes/base.describe: a short human detail. */
static PyObject *describe(Outcome o, const unsigned char *r, Py_ssize_t len) {
    if (len > WINDOW) len = WINDOW;
    if (o.status >= 0) {
        const unsigned char *nl = memchr(r, '\n', (size_t)len);
        Py_ssize_t a = 0, b = nl ? nl - r : len;
        while (a < b && is_ws(r[a])) a++;
        while (b > a && is_ws(r[b - 1])) b--;
        if (b - a > 80) b = a + 80;
        return PyUnicode_DecodeLatin1((const char *)r + a, b - a, NULL);
    }
    switch (o.reason) {
    case RS_MAINTENANCE_PAYLOAD:
        return PyUnicode_FromString("maintenance string found in reply");
    case RS_PAYLOAD_MISMATCH:
        return PyUnicode_FromFormat(
            "expected string not in the first 2048 bytes (%zd bytes received)", len);
    case RS_TIMEOUT:
        return PyUnicode_FromString("no reply within receive_timeout");
    default:
        break;
    }
    if (o.verdict == V_PASS) {
        if (len) return PyUnicode_FromFormat("%zd bytes received", len);
        return PyUnicode_FromString("connected");
    }
    return PyUnicode_FromString(REASON_TEXT[o.reason]);
}

static int codes_into(PyObject *codes, unsigned char *table, const char *what) {
    PyObject *it = PyObject_GetIter(codes);
    if (!it) return -1;
    PyObject *item;
    while ((item = PyIter_Next(it))) {
        long v = PyLong_AsLong(item);
        Py_DECREF(item);
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(it);
            return -1;
        }
        if (v < 100 || v > 599) {
            Py_DECREF(it);
            PyErr_Format(PyExc_ValueError, "%s: status code %ld is not within 100-599", what, v);
            return -1;
        }
        table[v] = 1;
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static int needle_arg(PyObject *arg, PyObject **out, const char *what) {
    if (arg == Py_None) {
        *out = NULL;
        return 0;
    }
    if (!PyBytes_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes or None, not %.100s", what,
                     Py_TYPE(arg)->tp_name);
        return -1;
    }
    Py_INCREF(arg);
    *out = arg;
    return 0;
}

static PyObject *Rules_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"kind", "accept", "maintenance_codes", "maintenance", "expected",
                             NULL};
    const char *kind;
    PyObject *accept, *mcodes, *maintenance, *expected;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sOOOO:Rules", kwlist, &kind, &accept, &mcodes,
                                     &maintenance, &expected))
        return NULL;
    RulesObject *self = (RulesObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    if (strcmp(kind, "http") == 0) {
        self->kind = KIND_HTTP;
    } else if (strcmp(kind, "tcp") == 0) {
        self->kind = KIND_TCP;
    } else {
        PyErr_Format(PyExc_ValueError, "kind must be 'http' or 'tcp', not '%s'", kind);
        goto fail;
    }
    if (codes_into(accept, self->accept, "accept") < 0) goto fail;
    if (codes_into(mcodes, self->maint_code, "maintenance_codes") < 0) goto fail;
    if (needle_arg(maintenance, &self->maintenance, "maintenance") < 0) goto fail;
    if (needle_arg(expected, &self->expected, "expected") < 0) goto fail;
    self->reads = self->kind == KIND_HTTP || self->maintenance || self->expected;
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static void Rules_dealloc(RulesObject *self) {
    Py_XDECREF(self->maintenance);
    Py_XDECREF(self->expected);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *status_obj(int status) {
    if (status < 0) Py_RETURN_NONE;
    return PyLong_FromLong(status);
}

static PyObject *Rules_classify(RulesObject *self, PyObject *args) {
    Py_buffer reply;
    int complete = 1;
    if (!PyArg_ParseTuple(args, "y*|p:classify", &reply, &complete)) return NULL;
    const unsigned char *r = reply.buf;
    Outcome o = classify(self, r, reply.len, complete);
    PyObject *detail = describe(o, r, reply.len);
    PyBuffer_Release(&reply);
    if (!detail) return NULL;
    PyObject *status = status_obj(o.status);
    if (!status) {
        Py_DECREF(detail);
        return NULL;
    }
    return Py_BuildValue("iiNN", o.verdict, o.reason, status, detail);
}

static PyObject *Rules_complete(RulesObject *self, PyObject *arg) {
    Py_buffer reply;
    if (PyObject_GetBuffer(arg, &reply, PyBUF_SIMPLE) < 0) return NULL;
    int done = reply_complete(self, reply.buf, reply.len);
    PyBuffer_Release(&reply);
    return PyBool_FromLong(done);
}

static PyObject *Rules_reads(RulesObject *self, void *closure) { return PyBool_FromLong(self->reads); }

static PyMethodDef Rules_methods[] = {
    {"classify", (PyCFunction)Rules_classify, METH_VARARGS,
     "classify(reply, complete=True) -> (verdict index, reason index, status or None, detail)"},
    {"complete", (PyCFunction)Rules_complete, METH_O,
     "complete(reply) -> True when more bytes could not change classify()"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Rules_getset[] = {
    {"reads", (getter)Rules_reads, NULL, "whether a check waits for a reply", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RulesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "quiesce._checkfast.Rules",
    .tp_basicsize = sizeof(RulesObject),
    .tp_dealloc = (destructor)Rules_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A monitor's compiled reply rules: Rules(kind, accept, maintenance_codes, "
              "maintenance, expected).",
    .tp_methods = Rules_methods,
    .tp_getset = Rules_getset,
    .tp_new = Rules_new,
};

/* ---------------------------------------------------------------------------------------- */
/* Spec: one (server address, monitor) pair                                                  */

/* The address as its family's own struct (28 bytes at most), not a sockaddr_storage (128):
   a Spec is kept per server, so at 100,000 servers that is 10 MiB (issue 21). The family is
   read from the address itself. */
typedef union {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
} spec_addr;

typedef struct {
    PyObject_HEAD
    spec_addr addr;
    PyObject *request; /* bytes */
    RulesObject *rules;
    double timeout;
} SpecObject;

static PyObject *Spec_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"host", "port", "request", "rules", "timeout", NULL};
    const char *host;
    int port;
    PyObject *request, *rules;
    double timeout;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "siSO!d:Spec", kwlist, &host, &port, &request,
                                     &RulesType, &rules, &timeout))
        return NULL;
    if (port < 1 || port > 65535) {
        PyErr_Format(PyExc_ValueError, "port must be within 1-65535, not %d", port);
        return NULL;
    }
    if (!(timeout > 0)) {
        PyErr_SetString(PyExc_ValueError, "timeout must be a positive number of seconds");
        return NULL;
    }
    SpecObject *self = (SpecObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    memset(&self->addr, 0, sizeof(self->addr));
    struct sockaddr_in *a4 = &self->addr.in4;
    struct sockaddr_in6 *a6 = &self->addr.in6;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
    } else {
        Py_DECREF(self);
        PyErr_Format(PyExc_ValueError, "host must be an IPv4 or IPv6 address, not '%s'", host);
        return NULL;
    }
    Py_INCREF(request);
    self->request = request;
    Py_INCREF(rules);
    self->rules = (RulesObject *)rules;
    self->timeout = timeout;
    return (PyObject *)self;
}

static void Spec_dealloc(SpecObject *self) {
    Py_XDECREF(self->request);
    Py_XDECREF(self->rules);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject SpecType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "quiesce._checkfast.Spec",
    .tp_basicsize = sizeof(SpecObject),
    .tp_dealloc = (destructor)Spec_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "What one check does: Spec(host, port, request, rules, timeout); host is an "
              "IP address.",
    .tp_new = Spec_new,
};

/* ---------------------------------------------------------------------------------------- */
/* Engine                                                                                    */

enum { S_CONNECTING, S_SENDING, S_READING };

typedef struct check {
    struct check *prev, *next; /* in deadline order */
    PyObject *token;
    SpecObject *spec;
    double deadline, started;
    Py_ssize_t sent;
    int fd;
    int state;
    int registered;
    Py_ssize_t len;
    unsigned char buf[WINDOW];
} check;

/* The result type's fields, in the order of its __match_args__. */
enum { F_MONITOR, F_VERDICT, F_REASON, F_AT, F_LATENCY, F_STATUS, F_DETAIL, N_FIELDS };
static const char *const FIELDS[N_FIELDS] = {
    "monitor", "verdict", "reason", "at", "latency", "status_code", "detail",
};

typedef struct {
    PyObject_HEAD
    int epfd;
    int busy; /* in start/poll/expire: Python code they run must not close or cancel */
    check *head, *tail;
    check *free;
    Py_ssize_t in_flight;
    double at; /* the wall time of the call in progress */
    PyObject *verdicts[N_VERDICTS];
    PyObject *reasons[N_REASONS];
    PyTypeObject *result_type;
    PyMemberDef *fields[N_FIELDS];
} EngineObject;

static PyObject *str_monitor; /* "monitor", interned */

static const struct linger LINGER_ZERO = {1, 0};

static check *check_alloc(EngineObject *e) {
    check *c = e->free;
    if (c) {
        e->free = c->next;
        return c;
    }
    return PyMem_RawMalloc(sizeof(check));
}

static void list_insert(EngineObject *e, check *c) {
    check *p = e->tail;
    while (p && p->deadline > c->deadline) p = p->prev;
    c->prev = p;
    c->next = p ? p->next : e->head;
    if (c->next)
        c->next->prev = c;
    else
        e->tail = c;
    if (p)
        p->next = c;
    else
        e->head = c;
}

static void list_remove(EngineObject *e, check *c) {
    if (c->prev)
        c->prev->next = c->next;
    else
        e->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        e->tail = c->prev;
}

/* Close the socket and free the check (the token reference is the caller's). */
static void check_release(EngineObject *e, check *c) {
    list_remove(e, c);
    if (c->fd >= 0) {
        if (c->state == S_READING || PyBytes_GET_SIZE(c->spec->request) == 0)
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &LINGER_ZERO, sizeof(LINGER_ZERO));
        /* Leave the epoll set explicitly: close() alone does not when another descriptor
         * still refers to the socket (a child between fork and exec), and a stale event
         * would then point at a freed check. */
        if (c->registered) epoll_ctl(e->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    Py_DECREF(c->spec);
    e->in_flight--;
    c->next = e->free;
    e->free = c;
}

/* A result object with its slots set (no __init__: see the top of this file). */
static PyObject *make_result(EngineObject *e, PyObject *values[N_FIELDS]) {
    PyObject *r = e->result_type->tp_alloc(e->result_type, 0);
    if (!r) return NULL;
    for (int i = 0; i < N_FIELDS; i++) {
        if (PyMember_SetOne((char *)r, e->fields[i], values[i]) < 0) {
            Py_DECREF(r);
            return NULL;
        }
    }
    return r;
}

/* End a check: append (token, result) to out. When the result cannot be made (a token
 * without a `monitor`, no memory for the detail), (token, None): the caller still learns
 * that the check ended. Returns -1 only when even that cannot be appended. */
static int finish(EngineObject *e, check *c, Outcome o, PyObject *detail, double mono,
                  PyObject *out) {
    PyObject *token = c->token;
    double latency = mono - c->started;
    check_release(e, c);
    PyObject *result = NULL, *pair = NULL;
    int rc = -1;
    if (!detail) {
        PyErr_Clear();
        pair = PyTuple_Pack(2, token, Py_None);
        if (pair) rc = PyList_Append(out, pair);
        Py_XDECREF(pair);
        Py_DECREF(token);
        return rc;
    }
    PyObject *values[N_FIELDS] = {NULL};
    values[F_MONITOR] = PyObject_GetAttr(token, str_monitor);
    values[F_VERDICT] = e->verdicts[o.verdict];
    values[F_REASON] = e->reasons[o.reason];
    values[F_AT] = PyFloat_FromDouble(e->at);
    values[F_LATENCY] = PyFloat_FromDouble(latency);
    values[F_STATUS] = status_obj(o.status);
    values[F_DETAIL] = detail;
    if (values[F_MONITOR] && values[F_AT] && values[F_LATENCY] && values[F_STATUS])
        result = make_result(e, values);
    if (!result) PyErr_Clear();
    pair = PyTuple_Pack(2, token, result ? result : Py_None);
    if (pair) rc = PyList_Append(out, pair);
    Py_XDECREF(pair);
    Py_XDECREF(result);
    Py_XDECREF(values[F_MONITOR]);
    Py_XDECREF(values[F_AT]);
    Py_XDECREF(values[F_LATENCY]);
    Py_XDECREF(values[F_STATUS]);
    Py_DECREF(detail);
    Py_DECREF(token);
    return rc;
}

static int finish_classified(EngineObject *e, check *c, int complete, double mono,
                             PyObject *out) {
    Outcome o = classify(c->spec->rules, c->buf, c->len, complete);
    return finish(e, c, o, describe(o, c->buf, c->len), mono, out);
}

/* probes/base.reason_for_error for an errno. */
static int finish_error(EngineObject *e, check *c, int err, double mono, PyObject *out) {
    Outcome o = {V_FAIL, RS_CONNECTION_ERROR, -1};
    PyObject *detail;
    switch (err) {
    case ETIMEDOUT:
        o.reason = RS_TIMEOUT;
        detail = PyUnicode_FromString("no reply within receive_timeout");
        break;
    case ECONNREFUSED:
        o.reason = RS_REFUSED;
        detail = PyUnicode_FromString("connection refused");
        break;
    case ECONNRESET:
    case EPIPE:
    case ESHUTDOWN:
        o.reason = RS_RESET;
        detail = PyUnicode_FromString("connection reset by peer");
        break;
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EHOSTDOWN:
        o.reason = RS_HOST_UNREACHABLE;
        detail = PyUnicode_FromString(strerror(err));
        break;
    default:
        detail = PyUnicode_FromString(strerror(err));
    }
    return finish(e, c, o, detail, mono, out);
}

static int watch(EngineObject *e, check *c, uint32_t events) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.ptr = c;
    int rc = epoll_ctl(e->epfd, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev);
    if (rc == 0) c->registered = 1;
    return rc;
}

#define IN_EVENTS (EPOLLIN | EPOLLRDHUP)

/* Send what is left of the request; then wait for the reply, or end the check when no reply
 * is awaited. Returns -1 only on a Python error. */
static int do_send(EngineObject *e, check *c, double mono, PyObject *out) {
    Py_ssize_t total = PyBytes_GET_SIZE(c->spec->request);
    const char *req = PyBytes_AS_STRING(c->spec->request);
    while (c->sent < total) {
        ssize_t n = send(c->fd, req + c->sent, (size_t)(total - c->sent), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c->state = S_SENDING;
                if (watch(e, c, EPOLLOUT) < 0) return finish_error(e, c, errno, mono, out);
                return 0;
            }
            return finish_error(e, c, errno, mono, out);
        }
        c->sent += n;
    }
    if (!c->spec->rules->reads) return finish_classified(e, c, 1, mono, out);
    c->state = S_READING;
    if (watch(e, c, IN_EVENTS) < 0) return finish_error(e, c, errno, mono, out);
    return 0;
}

/* A readable socket: one recv. */
static int do_read(EngineObject *e, check *c, double mono, PyObject *out) {
    static unsigned char chunk[65536];
    ssize_t n;
    do {
        n = recv(c->fd, chunk, sizeof(chunk), 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        if (c->len) return finish_classified(e, c, 1, mono, out);
        return finish_error(e, c, errno, mono, out);
    }
    if (n == 0) return finish_classified(e, c, 1, mono, out);
    Py_ssize_t room = WINDOW - c->len;
    if (room > 0) {
        Py_ssize_t take = n < room ? n : room;
        memcpy(c->buf + c->len, chunk, (size_t)take);
        c->len += take;
    }
    if (reply_complete(c->spec->rules, c->buf, c->len)) return finish_classified(e, c, 1, mono, out);
    return 0;
}

static int on_event(EngineObject *e, check *c, double mono, PyObject *out) {
    if (c->state == S_READING) return do_read(e, c, mono, out);
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err) return finish_error(e, c, err, mono, out);
    return do_send(e, c, mono, out); /* sends the rest, or goes on to read / report */
}

/* The deadline passed: read what is already there before calling it a timeout (a busy loop
 * may run this before the readiness event of a reply that came in time). */
static int on_deadline(EngineObject *e, check *c, double mono, PyObject *out) {
    if (c->state != S_READING) return finish_error(e, c, ETIMEDOUT, mono, out);
    static unsigned char chunk[65536];
    int eof = 0;
    while (c->len < WINDOW) {
        ssize_t n = recv(c->fd, chunk, sizeof(chunk), 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (n == 0) {
            eof = 1;
            break;
        }
        Py_ssize_t room = WINDOW - c->len;
        Py_ssize_t take = n < room ? n : room;
        memcpy(c->buf + c->len, chunk, (size_t)take);
        c->len += take;
    }
    if (eof || (c->len && reply_complete(c->spec->rules, c->buf, c->len)))
        return finish_classified(e, c, 1, mono, out);
    if (c->len) return finish_classified(e, c, 0, mono, out);
    return finish_error(e, c, ETIMEDOUT, mono, out);
}

/* The result type must be a slots dataclass with exactly FIELDS, in order, and nothing
 * that __init__ would have done beyond setting them. */
static int result_fields(PyTypeObject *rt, PyMemberDef *fields[N_FIELDS]) {
    if (PyObject_HasAttrString((PyObject *)rt, "__post_init__")) {
        PyErr_Format(PyExc_TypeError, "result_type %s has a __post_init__", rt->tp_name);
        return -1;
    }
    PyObject *match = PyObject_GetAttrString((PyObject *)rt, "__match_args__");
    if (!match) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "result_type %s is not a dataclass", rt->tp_name);
        return -1;
    }
    int ok = PyTuple_Check(match) && PyTuple_GET_SIZE(match) == N_FIELDS;
    for (int i = 0; ok && i < N_FIELDS; i++) {
        PyObject *name = PyTuple_GET_ITEM(match, i);
        ok = PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, FIELDS[i]) == 0;
        PyObject *d = ok ? PyDict_GetItemWithError(rt->tp_dict, name) : NULL;
        ok = d && Py_IS_TYPE(d, &PyMemberDescr_Type);
        if (ok) fields[i] = ((PyMemberDescrObject *)d)->d_member;
    }
    Py_DECREF(match);
    if (!ok) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_TypeError,
                         "result_type %s must be a slots dataclass with the fields monitor, "
                         "verdict, reason, at, latency, status_code, detail",
                         rt->tp_name);
        return -1;
    }
    return 0;
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"verdicts", "reasons", "result_type", NULL};
    PyObject *verdicts, *reasons;
    PyTypeObject *rt;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!:Engine", kwlist, &PyTuple_Type,
                                     &verdicts, &PyTuple_Type, &reasons, &PyType_Type, &rt))
        return NULL;
    PyMemberDef *fields[N_FIELDS];
    if (result_fields(rt, fields) < 0) return NULL;
    if (PyTuple_GET_SIZE(verdicts) != N_VERDICTS || PyTuple_GET_SIZE(reasons) != N_REASONS) {
        PyErr_Format(PyExc_ValueError, "Engine needs %d verdicts and %d reasons, got %zd and %zd",
                     N_VERDICTS, N_REASONS, PyTuple_GET_SIZE(verdicts),
                     PyTuple_GET_SIZE(reasons));
        return NULL;
    }
    EngineObject *self = (EngineObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(self);
        return NULL;
    }
    for (int i = 0; i < N_VERDICTS; i++) {
        self->verdicts[i] = PyTuple_GET_ITEM(verdicts, i);
        Py_INCREF(self->verdicts[i]);
    }
    for (int i = 0; i < N_REASONS; i++) {
        self->reasons[i] = PyTuple_GET_ITEM(reasons, i);
        Py_INCREF(self->reasons[i]);
    }
    Py_INCREF(rt);
    self->result_type = rt;
    memcpy(self->fields, fields, sizeof(fields));
    return (PyObject *)self;
}

static void engine_close(EngineObject *self) {
    while (self->head) {
        check *c = self->head;
        PyObject *token = c->token;
        check_release(self, c);
        Py_DECREF(token);
    }
    while (self->free) {
        check *c = self->free;
        self->free = c->next;
        PyMem_RawFree(c);
    }
    if (self->epfd >= 0) {
        close(self->epfd);
        self->epfd = -1;
    }
}

/* The engine holds the tokens of the checks in flight (a health manager's jobs, which hold
 * the manager...): the cyclic GC must see those references. */
static int Engine_traverse(EngineObject *self, visitproc visit, void *arg) {
    for (check *c = self->head; c; c = c->next) {
        Py_VISIT(c->token);
        Py_VISIT(c->spec);
    }
    for (int i = 0; i < N_VERDICTS; i++) Py_VISIT(self->verdicts[i]);
    for (int i = 0; i < N_REASONS; i++) Py_VISIT(self->reasons[i]);
    Py_VISIT(self->result_type);
    return 0;
}

static int Engine_clear(EngineObject *self) {
    engine_close(self); /* drops the tokens and specs */
    return 0;
}

static void Engine_dealloc(EngineObject *self) {
    PyObject_GC_UnTrack(self);
    engine_close(self);
    for (int i = 0; i < N_VERDICTS; i++) Py_XDECREF(self->verdicts[i]);
    for (int i = 0; i < N_REASONS; i++) Py_XDECREF(self->reasons[i]);
    Py_XDECREF(self->result_type);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_open(EngineObject *self) {
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "the engine is closed");
        return -1;
    }
    return 0;
}

/* start, poll and expire run Python code while they walk their checks (a token's
 * `monitor`, a decref): that code must not free checks under them. */
static int not_busy(EngineObject *self) {
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the engine is busy (re-entrant call)");
        return -1;
    }
    return 0;
}

static PyObject *Engine_start(EngineObject *self, PyObject *args) {
    PyObject *batch;
    double now, mono, at;
    if (!PyArg_ParseTuple(args, "O!ddd:start", &PyList_Type, &batch, &now, &mono, &at))
        return NULL;
    if (check_open(self) < 0 || not_busy(self) < 0) return NULL;
    /* a copy: Python code run below cannot shrink what is walked; every item checked before
     * any check starts, so a bad batch starts nothing */
    PyObject *items = PyList_AsTuple(batch);
    if (!items) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 ||
            !PyObject_TypeCheck(PyTuple_GET_ITEM(item, 1), &SpecType)) {
            PyErr_SetString(PyExc_TypeError, "start: batch items must be (token, Spec) tuples");
            Py_DECREF(items);
            return NULL;
        }
    }
    self->at = at;
    PyObject *out = PyList_New(0);
    if (!out) {
        Py_DECREF(items);
        return NULL;
    }
    self->busy = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i);
        PyObject *token = PyTuple_GET_ITEM(item, 0);
        SpecObject *spec = (SpecObject *)PyTuple_GET_ITEM(item, 1);
        check *c = check_alloc(self);
        if (!c) {
            PyErr_NoMemory();
            goto fail;
        }
        Py_INCREF(token);
        Py_INCREF(spec);
        c->token = token;
        c->spec = spec;
        c->started = mono;
        c->deadline = now + spec->timeout;
        c->sent = 0;
        c->len = 0;
        c->registered = 0;
        c->state = S_CONNECTING;
        self->in_flight++;
        list_insert(self, c);
        int family = spec->addr.sa.sa_family;
        c->fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) {
            if (finish_error(self, c, errno, mono, out) < 0) goto fail;
            continue;
        }
        int rc;
        do {
            rc = connect(c->fd, &spec->addr.sa,
                         family == AF_INET ? (socklen_t)sizeof(spec->addr.in4)
                                           : (socklen_t)sizeof(spec->addr.in6));
        } while (rc < 0 && errno == EINTR);
        if (rc < 0 && errno != EINPROGRESS) {
            if (finish_error(self, c, errno, mono, out) < 0) goto fail;
            continue;
        }
        if (PyBytes_GET_SIZE(spec->request)) {
            /* loopback and fast LANs are connected already */
            if (do_send(self, c, mono, out) < 0) goto fail;
        } else if (watch(self, c, EPOLLOUT) < 0) {
            if (finish_error(self, c, errno, mono, out) < 0) goto fail;
        }
    }
    self->busy = 0;
    Py_DECREF(items);
    return out;
fail:
    self->busy = 0;
    Py_DECREF(items);
    Py_DECREF(out);
    return NULL;
}

static PyObject *Engine_poll(EngineObject *self, PyObject *args) {
    double mono, at;
    if (!PyArg_ParseTuple(args, "dd:poll", &mono, &at)) return NULL;
    if (check_open(self) < 0 || not_busy(self) < 0) return NULL;
    self->at = at;
    struct epoll_event events[MAX_EVENTS];
    int n;
    do {
        n = epoll_wait(self->epfd, events, MAX_EVENTS, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return PyErr_SetFromErrno(PyExc_OSError);
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    self->busy = 1;
    for (int i = 0; i < n; i++) {
        if (on_event(self, (check *)events[i].data.ptr, mono, out) < 0) {
            self->busy = 0;
            Py_DECREF(out);
            return NULL;
        }
    }
    self->busy = 0;
    return out;
}

static PyObject *Engine_expire(EngineObject *self, PyObject *args) {
    double now, mono, at;
    if (!PyArg_ParseTuple(args, "ddd:expire", &now, &mono, &at)) return NULL;
    if (check_open(self) < 0 || not_busy(self) < 0) return NULL;
    self->at = at;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    self->busy = 1;
    while (self->head && self->head->deadline <= now) {
        if (on_deadline(self, self->head, mono, out) < 0) {
            self->busy = 0;
            Py_DECREF(out);
            return NULL;
        }
    }
    self->busy = 0;
    return out;
}

static PyObject *Engine_next_deadline(EngineObject *self, PyObject *unused) {
    if (!self->head) Py_RETURN_NONE;
    return PyFloat_FromDouble(self->head->deadline);
}

static PyObject *Engine_cancel(EngineObject *self, PyObject *token) {
    if (not_busy(self) < 0) return NULL;
    for (check *c = self->head; c; c = c->next) {
        if (c->token == token) {
            check_release(self, c);
            Py_DECREF(token);
            Py_RETURN_TRUE;
        }
    }
    Py_RETURN_FALSE;
}

static PyObject *Engine_fileno(EngineObject *self, PyObject *unused) {
    if (check_open(self) < 0) return NULL;
    return PyLong_FromLong(self->epfd);
}

static PyObject *Engine_close(EngineObject *self, PyObject *unused) {
    if (not_busy(self) < 0) return NULL;
    engine_close(self);
    Py_RETURN_NONE;
}

static Py_ssize_t Engine_len(EngineObject *self) { return self->in_flight; }

static PyMethodDef Engine_methods[] = {
    {"start", (PyCFunction)Engine_start, METH_VARARGS,
     "start(batch: list[(token, Spec)], now, mono, at) -> (token, result) of the checks that "
     "ended at once"},
    {"poll", (PyCFunction)Engine_poll, METH_VARARGS,
     "poll(mono, at) -> (token, result) of the checks whose sockets were ready and ended"},
    {"expire", (PyCFunction)Engine_expire, METH_VARARGS,
     "expire(now, mono, at) -> (token, result) of the checks whose deadline is <= now"},
    {"next_deadline", (PyCFunction)Engine_next_deadline, METH_NOARGS,
     "the earliest deadline of a check in flight, or None"},
    {"cancel", (PyCFunction)Engine_cancel, METH_O,
     "cancel(token) -> whether a check with that token was in flight (it never reports)"},
    {"fileno", (PyCFunction)Engine_fileno, METH_NOARGS, "the epoll descriptor"},
    {"close", (PyCFunction)Engine_close, METH_NOARGS, "abandon every check, close the set"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Engine_as_sequence = {
    .sq_length = (lenfunc)Engine_len,
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "quiesce._checkfast.Engine",
    .tp_basicsize = sizeof(EngineObject),
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Engine_traverse,
    .tp_clear = (inquiry)Engine_clear,
    .tp_free = PyObject_GC_Del,
    .tp_doc = "Plain TCP/HTTP checks in one epoll set: Engine(verdicts, reasons, result_type).",
    .tp_methods = Engine_methods,
    .tp_as_sequence = &Engine_as_sequence,
    .tp_new = Engine_new,
};

/* ---------------------------------------------------------------------------------------- */

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "quiesce._checkfast",
    "Batched plain TCP/HTTP health-check I/O and reply classification (see checkfast.c).", -1,
    NULL,
};

PyMODINIT_FUNC PyInit__checkfast(void) {
    if (PyType_Ready(&RulesType) < 0 || PyType_Ready(&SpecType) < 0 ||
        PyType_Ready(&EngineType) < 0)
        return NULL;
    str_monitor = PyUnicode_InternFromString("monitor");
    if (!str_monitor) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "WINDOW", WINDOW) < 0 ||
        PyModule_AddObjectRef(m, "Rules", (PyObject *)&RulesType) < 0 ||
        PyModule_AddObjectRef(m, "Spec", (PyObject *)&SpecType) < 0 ||
        PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
