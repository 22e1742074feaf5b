/* quiesce._dbfast: the database relays' framers (quiesce.dataplane.pg, .mysql) in C.
 *
 * Theory of operation
 * -------------------
 * The pure-Python framers are the reference; this module is the same walk over one read,
 * so that a read of whole messages with nothing unusual in it costs one C call.
 *
 * PgSession and MysqlSession hold a session's state as C fields, exposed as members of the
 * same names as the Python Session's slots: the Python code that handles the rare parts
 * (PostgreSQL's start-up packets, MySQL's connection phase and rare responses) reads and
 * writes them as it would the pure session's. quiesce.dataplane.dbfast subclasses them with
 * the Python rules (state, closable, goodbye).
 *
 * PgFramer.typed(data) is pg._Framer.typed: every typed message of a read, in C.
 * MysqlFramer.walk(data) is mysql._Framer.walk: the packet loop in C; the command phase's
 * common packets (a command, rows, column definitions, the OK/EOF/ERR that ends a result
 * set or a command) are handled here, anything else by calling the Python methods `_need`,
 * `_packet` and `_response` of the same object, which see the same state through the
 * members. The direction comes from the class's `_who` ("client" or "server").
 *
 * Error strings are the Python framers' word for word: tests/dataplane/test_dbfast.py walks
 * random message streams, split at random points, through both and compares state and
 * errors after every read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------- shared */

/* `partial + data` (or data itself), the partial emptied. New reference. */
static PyObject *joined(PyObject **partial, PyObject *data) {
    if (PyBytes_GET_SIZE(*partial) == 0) {
        Py_INCREF(data);
        return data;
    }
    Py_ssize_t a = PyBytes_GET_SIZE(*partial), b = PyBytes_GET_SIZE(data);
    PyObject *out = PyBytes_FromStringAndSize(NULL, a + b);
    if (out == NULL) return NULL;
    memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(*partial), a);
    memcpy(PyBytes_AS_STRING(out) + a, PyBytes_AS_STRING(data), b);
    PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
    if (empty == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    Py_SETREF(*partial, empty);
    return out;
}

/* Keep data[pos:] as the partial. 0, or -1 on error. */
static int keep(PyObject **partial, PyObject *data, Py_ssize_t pos, Py_ssize_t n) {
    PyObject *rest = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + pos, n - pos);
    if (rest == NULL) return -1;
    Py_SETREF(*partial, rest);
    return 0;
}

/* The class's `_who`: 1 for "client", 0 for "server", -1 (error set) otherwise. */
static int who_of(PyObject *self) {
    PyObject *who = PyObject_GetAttrString(self, "_who");
    if (who == NULL) return -1;
    int out = -1;
    if (PyUnicode_Check(who) && PyUnicode_CompareWithASCIIString(who, "client") == 0)
        out = 1;
    else if (PyUnicode_Check(who) && PyUnicode_CompareWithASCIIString(who, "server") == 0)
        out = 0;
    else
        PyErr_SetString(PyExc_TypeError, "_who must be 'client' or 'server'");
    Py_DECREF(who);
    return out;
}

/* A framer whose __init__ did not run (or a session's): refused, not crashed on. */
static int unready(void *session) {
    if (session != NULL) return 0;
    PyErr_SetString(PyExc_RuntimeError, "framer not initialised");
    return 1;
}

/* What both framers hold: the session (a PgSession or a MysqlSession), the bytes of a head
 * split between reads, the body bytes still to pass over, the size limit, the direction. */
typedef struct {
    PyObject_HEAD
    PyObject *session;
    PyObject *partial; /* bytes */
    Py_ssize_t skip;
    Py_ssize_t max;
    int client;
} Framer;

#define MAX_MESSAGE 0x3FFFFFFF

static int framer_setup(Framer *self, PyObject *args, PyObject *kwds, PyTypeObject *type) {
    static char *kwlist[] = {"session", "max_message", NULL};
    PyObject *session;
    Py_ssize_t max = MAX_MESSAGE;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!|n", kwlist, type, &session, &max)) return -1;
    int client = who_of((PyObject *)self);
    if (client < 0) return -1;
    PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
    if (empty == NULL) return -1;
    Py_INCREF(session);
    Py_XSETREF(self->session, session);
    Py_XSETREF(self->partial, empty);
    self->skip = 0;
    self->max = max;
    self->client = client;
    return 0;
}

static void Framer_dealloc(Framer *self) {
    Py_XDECREF(self->session);
    Py_XDECREF(self->partial);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Framer_setpartial(Framer *self, PyObject *v, void *closure) {
    if (v == NULL || !PyBytes_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "partial must be bytes");
        return -1;
    }
    Py_INCREF(v);
    Py_SETREF(self->partial, v);
    return 0;
}

static PyObject *Framer_getpartial(Framer *self, void *closure) {
    if (self->partial == NULL) return PyBytes_FromStringAndSize(NULL, 0);
    Py_INCREF(self->partial);
    return self->partial;
}

static PyGetSetDef Framer_getset[] = {
    {"partial", (getter)Framer_getpartial, (setter)Framer_setpartial, NULL, NULL},
    {NULL}};

static PyMemberDef Framer_members[] = {
    {"session", T_OBJECT, offsetof(Framer, session), READONLY, NULL},
    {"skip", T_PYSSIZET, offsetof(Framer, skip), 0, NULL},
    {"max", T_PYSSIZET, offsetof(Framer, max), 0, NULL},
    {NULL}};

static PyTypeObject FramerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "quiesce._dbfast.Framer",
    .tp_basicsize = sizeof(Framer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "What both framers hold.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Framer_dealloc,
    .tp_members = Framer_members,
    .tp_getset = Framer_getset,
};

/* ---------------------------------------------------------------- PostgreSQL */

typedef struct {
    PyObject_HEAD
    int status;
    Py_ssize_t pending;
    char unsynced, listening, started, cancel, ended, fresh;
} PgSession;

static int PgSession_init(PgSession *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":PgSession", kwlist)) return -1;
    self->status = 'I';
    self->pending = 0;
    self->unsynced = self->listening = self->started = self->cancel = self->ended = 0;
    self->fresh = 1;
    return 0;
}

static PyMemberDef PgSession_members[] = {
    {"status", T_INT, offsetof(PgSession, status), 0, NULL},
    {"pending", T_PYSSIZET, offsetof(PgSession, pending), 0, NULL},
    {"unsynced", T_BOOL, offsetof(PgSession, unsynced), 0, NULL},
    {"listening", T_BOOL, offsetof(PgSession, listening), 0, NULL},
    {"started", T_BOOL, offsetof(PgSession, started), 0, NULL},
    {"cancel", T_BOOL, offsetof(PgSession, cancel), 0, NULL},
    {"ended", T_BOOL, offsetof(PgSession, ended), 0, NULL},
    {"fresh", T_BOOL, offsetof(PgSession, fresh), 0, NULL},
    {NULL}};

static PyTypeObject PgSessionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "quiesce._dbfast.PgSession",
    .tp_basicsize = sizeof(PgSession),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "A PostgreSQL session's state (quiesce.dataplane.pg.Session's fields).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)PgSession_init,
    .tp_members = PgSession_members,
};

typedef Framer PgFramer;

#define PG_INSPECT_MAX 256

static unsigned char pg_front_ok[256], pg_back_ok[256];

static int PgFramer_init(PgFramer *self, PyObject *args, PyObject *kwds) {
    return framer_setup(self, args, kwds, &PgSessionType);
}

static int starts(const unsigned char *d, Py_ssize_t at, Py_ssize_t n, const char *word) {
    size_t len = strlen(word);
    return at + (Py_ssize_t)len <= n && memcmp(d + at, word, len) == 0;
}

static PyObject *pg_bad(PgFramer *self, int t, uint32_t length) {
    const char *who = self->client ? "client" : "server";
    char one = (char)t;
    PyObject *b = PyBytes_FromStringAndSize(&one, 1);
    if (b == NULL) return NULL;
    PyObject *r = PyObject_Repr(b);
    Py_DECREF(b);
    if (r == NULL) return NULL;
    PyObject *out;
    if (!(self->client ? pg_front_ok : pg_back_ok)[t])
        out = PyUnicode_FromFormat("%s sent an unknown message type %U", who, r);
    else
        out = PyUnicode_FromFormat("%s sent a message of type %U with length %lu", who, r,
                                   (unsigned long)length);
    Py_DECREF(r);
    return out;
}

/* pg._Framer.typed: the end of a message a previous read began, whole messages, the head of
 * the next (kept). None, or an error string. */
static PyObject *PgFramer_typed(PgFramer *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "typed() takes bytes");
        return NULL;
    }
    if (unready(self->session)) return NULL;
    PyObject *data = joined(&self->partial, arg);
    if (data == NULL) return NULL;
    PyObject *out = NULL;
    PgSession *s = (PgSession *)self->session;
    Py_ssize_t n = PyBytes_GET_SIZE(data), pos = self->skip;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
    if (pos) {
        if (pos >= n) {
            self->skip = pos - n;
            Py_DECREF(data);
            Py_RETURN_NONE;
        }
        self->skip = 0;
    }
    if (s->cancel) {
        out = PyUnicode_FromFormat("%s sent more after a CancelRequest",
                                   self->client ? "client" : "server");
        Py_DECREF(data);
        return out;
    }
    const unsigned char *ok = self->client ? pg_front_ok : pg_back_ok;
    int front = self->client;
    uint64_t limit = self->max < 0 ? 0 : (uint64_t)self->max; /* < 0: all refused, as in Python */
    while (n - pos >= 5) {
        int t = d[pos];
        uint32_t length = (uint32_t)d[pos + 1] << 24 | (uint32_t)d[pos + 2] << 16 |
                          (uint32_t)d[pos + 3] << 8 | d[pos + 4];
        if (!ok[t] || length < 4 || (uint64_t)length > limit) {
            out = pg_bad(self, t, length);
            Py_DECREF(data);
            return out;
        }
        Py_ssize_t end = pos + 1 + (Py_ssize_t)length;
        if (front) {
            if (t == 'Q' || t == 'S' || t == 'F') {
                s->pending += 1;
                s->fresh = 0;
                if (t == 'S') s->unsynced = 0;
            } else if (t == 'P' || t == 'B' || t == 'E' || t == 'D' || t == 'C') {
                s->unsynced = 1;
                s->fresh = 0;
            } else if (t == 'X') {
                s->ended = 1;
            }
        } else if ((t == 'Z' || t == 'C') && length <= PG_INSPECT_MAX) {
            if (end > n) { /* read it once it is whole */
                if (keep(&self->partial, data, pos, n) < 0) goto error;
                Py_DECREF(data);
                Py_RETURN_NONE;
            }
            if (t == 'Z') {
                if (length > 4) s->status = d[pos + 5];
                if (s->pending) s->pending -= 1;
            } else if (starts(d, pos + 5, n, "LISTEN")) {
                s->listening = 1;
            } else if (starts(d, pos + 5, n, "UNLISTEN") || starts(d, pos + 5, n, "DISCARD ALL")) {
                s->listening = 0;
            }
        }
        if (end >= n) {
            self->skip = end - n;
            Py_DECREF(data);
            Py_RETURN_NONE;
        }
        pos = end;
    }
    if (keep(&self->partial, data, pos, n) < 0) goto error;
    Py_DECREF(data);
    Py_RETURN_NONE;
error:
    Py_DECREF(data);
    return NULL;
}

static PyMethodDef PgFramer_methods[] = {
    {"typed", (PyCFunction)PgFramer_typed, METH_O,
     "One read of typed messages: an error string or None."},
    {NULL}};

static PyTypeObject PgFramerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "quiesce._dbfast.PgFramer",
    .tp_basicsize = sizeof(PgFramer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "One direction of a PostgreSQL session (quiesce.dataplane.pg._Framer).",
    .tp_base = &FramerType,
    .tp_init = (initproc)PgFramer_init,
    .tp_methods = PgFramer_methods,
};

/* ---------------------------------------------------------------- MySQL / MariaDB */

#define MY_LONG 0xFFFFFF
#define MY_INSPECT 32
#define MY_COMMAND 3 /* mysql.COMMAND */
enum { R_FIRST, R_COLS, R_COLS_EOF, R_ROWS, R_SKIP, R_INFILE, R_AUTH, R_STREAM };
#define IN_MORE_RESULTS 0x0008
#define IN_CURSOR_EXISTS 0x0040

typedef struct {
    PyObject_HEAD
    int phase;
    int status;
    int r;
    PyObject *queue; /* list of int: the commands whose response has not ended */
    unsigned long long left;
    unsigned long long server_caps;
    char started, deprecate_eof, cache_meta, opaque, ended, fresh;
} MysqlSession;

static int MysqlSession_init(MysqlSession *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":MysqlSession", kwlist)) return -1;
    PyObject *queue = PyList_New(0);
    if (queue == NULL) return -1;
    Py_XSETREF(self->queue, queue);
    self->phase = 0; /* GREETING */
    self->status = 0x0002; /* AUTOCOMMIT */
    self->r = R_FIRST;
    self->left = self->server_caps = 0;
    self->started = self->deprecate_eof = self->cache_meta = self->opaque = self->ended = 0;
    self->fresh = 1;
    return 0;
}

static void MysqlSession_dealloc(MysqlSession *self) {
    Py_XDECREF(self->queue);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef MysqlSession_members[] = {
    {"phase", T_INT, offsetof(MysqlSession, phase), 0, NULL},
    {"status", T_INT, offsetof(MysqlSession, status), 0, NULL},
    {"r", T_INT, offsetof(MysqlSession, r), 0, NULL},
    {"queue", T_OBJECT, offsetof(MysqlSession, queue), READONLY, NULL},
    {"left", T_ULONGLONG, offsetof(MysqlSession, left), 0, NULL},
    {"server_caps", T_ULONGLONG, offsetof(MysqlSession, server_caps), 0, NULL},
    {"started", T_BOOL, offsetof(MysqlSession, started), 0, NULL},
    {"deprecate_eof", T_BOOL, offsetof(MysqlSession, deprecate_eof), 0, NULL},
    {"cache_meta", T_BOOL, offsetof(MysqlSession, cache_meta), 0, NULL},
    {"opaque", T_BOOL, offsetof(MysqlSession, opaque), 0, NULL},
    {"ended", T_BOOL, offsetof(MysqlSession, ended), 0, NULL},
    {"fresh", T_BOOL, offsetof(MysqlSession, fresh), 0, NULL},
    {NULL}};

static PyTypeObject MysqlSessionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "quiesce._dbfast.MysqlSession",
    .tp_basicsize = sizeof(MysqlSession),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "A MySQL session's state (quiesce.dataplane.mysql.Session's fields).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)MysqlSession_init,
    .tp_dealloc = (destructor)MysqlSession_dealloc,
    .tp_members = MysqlSession_members,
};

typedef struct {
    Framer f;
    Py_ssize_t size; /* the current logical message's size so far */
    char cont;       /* the last packet was 0xFFFFFF long: the next continues it */
} MysqlFramer;

static int MysqlFramer_init(MysqlFramer *self, PyObject *args, PyObject *kwds) {
    self->size = 0;
    self->cont = 0;
    return framer_setup(&self->f, args, kwds, &MysqlSessionType);
}

/* mysql._lenenc: the position after a length-encoded integer at p, and its value (the bytes
 * there are, up to the read's end, as the Python slice). */
static Py_ssize_t lenenc(const unsigned char *d, Py_ssize_t p, Py_ssize_t n,
                        unsigned long long *value) {
    int b = d[p];
    if (b < 0xFB) {
        *value = (unsigned long long)b;
        return p + 1;
    }
    int size = b == 0xFC ? 2 : b == 0xFD ? 3 : b == 0xFE ? 8 : 0;
    unsigned long long v = 0;
    for (int i = 0; i < size && p + 1 + i < n; i++) v |= (unsigned long long)d[p + 1 + i] << (8 * i);
    *value = v;
    return p + 1 + size;
}

/* mysql._ok_status: an OK packet's status flags, -1 if it is too short. */
static int ok_status(const unsigned char *d, Py_ssize_t p, Py_ssize_t end, Py_ssize_t n) {
    Py_ssize_t q = p + 1;
    unsigned long long ignored;
    for (int i = 0; i < 2; i++) {
        if (q >= end) return -1;
        q = lenenc(d, q, n, &ignored);
    }
    return q + 2 <= end ? (d[q] | d[q + 1] << 8) : -1;
}

static int my_done(MysqlSession *s) {
    if (PyList_SetSlice(s->queue, 0, 1, NULL) < 0) return -1;
    s->r = R_FIRST;
    s->left = 0;
    return 0;
}

static int my_ok(MysqlSession *s, const unsigned char *d, Py_ssize_t p, Py_ssize_t end,
                 Py_ssize_t n) {
    int status = ok_status(d, p, end, n);
    if (status >= 0) {
        s->status = status;
        if (status & IN_MORE_RESULTS) {
            s->r = R_FIRST;
            return 0;
        }
    }
    return my_done(s);
}

static int is_result_set(long cmd) {
    return cmd == 0x03 || cmd == 0x17 || cmd == 0x0A || cmd == 0xFA;
}

/* mysql.ServerFramer._response for the common packets; the rest by the Python method. A new
 * reference: None, an error string; NULL on an exception. */
static PyObject *my_response(MysqlFramer *self, PyObject *data, Py_ssize_t p, Py_ssize_t length) {
    MysqlSession *s = (MysqlSession *)self->f.session;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    PyObject *q = s->queue;
    if (!PyList_CheckExact(q)) {
        PyErr_SetString(PyExc_TypeError, "queue must be a list");
        return NULL;
    }
    int b = length ? d[p] : -1;
    if (PyList_GET_SIZE(q) == 0) {
        if (b == 0xFF) Py_RETURN_NONE;
        return PyUnicode_FromString("server sent a packet with no command outstanding");
    }
    int r = s->r, fail = 0;
    Py_ssize_t end = p + length;
    if (r == R_ROWS) {
        if (b == 0xFE && length < MY_LONG) {
            if (s->deprecate_eof)
                fail = my_ok(s, d, p, end, n);
            else {
                int more = 0;
                if (length >= 5) {
                    s->status = d[p + 3] | d[p + 4] << 8;
                    more = s->status & IN_MORE_RESULTS;
                }
                if (more)
                    s->r = R_FIRST;
                else
                    fail = my_done(s);
            }
        } else if (b == 0xFF)
            fail = my_done(s);
    } else if (r == R_FIRST) {
        long cmd = PyLong_AsLong(PyList_GET_ITEM(q, 0));
        if (cmd == -1 && PyErr_Occurred()) return NULL;
        if (b == 0xFF)
            fail = my_done(s);
        else if (is_result_set(cmd)) {
            if (b == 0x00)
                fail = my_ok(s, d, p, end, n);
            else if (b == 0xFB && cmd == 0x03)
                s->r = R_INFILE;
            else if (b < 0)
                return PyUnicode_FromString("server sent an empty packet for a result set");
            else {
                unsigned long long count;
                Py_ssize_t after = lenenc(d, p, n, &count);
                if (s->cache_meta && cmd != 0x03 && after < end && !d[after]) count = 0;
                s->left = count;
                s->r = count ? R_COLS : s->deprecate_eof ? R_ROWS : R_COLS_EOF;
            }
        } else
            goto python;
    } else if (r == R_COLS) {
        s->left -= 1;
        if (!s->left) s->r = s->deprecate_eof ? R_ROWS : R_COLS_EOF;
    } else if (r == R_COLS_EOF) {
        if (b == 0xFF)
            fail = my_done(s);
        else if (b != 0xFE)
            return PyUnicode_FromString("server sent no EOF after the column definitions");
        else {
            if (length >= 5) s->status = d[p + 3] | d[p + 4] << 8;
            if (s->status & IN_CURSOR_EXISTS)
                fail = my_done(s);
            else
                s->r = R_ROWS;
        }
    } else
        goto python;
    if (fail) return NULL;
    Py_RETURN_NONE;
python:
    return PyObject_CallMethod((PyObject *)self, "_response", "Onn", data, p, length);
}

/* The result of a Python `_need`/`_packet`/`_response` or my_response: 0 (None: go on),
 * 1 (*out is the error string to return), -1 (an exception). Steals the reference. */
static int outcome(PyObject *res, PyObject **out) {
    if (res == NULL) return -1;
    if (res == Py_None) {
        Py_DECREF(res);
        return 0;
    }
    *out = res;
    return 1;
}

/* mysql._Framer.walk: one read; None or an error string. */
static PyObject *MysqlFramer_walk(MysqlFramer *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "walk() takes bytes");
        return NULL;
    }
    MysqlSession *s = (MysqlSession *)self->f.session;
    if (unready(s) || unready(s->queue)) return NULL;
    if (s->opaque) Py_RETURN_NONE;
    PyObject *data = joined(&self->f.partial, arg);
    if (data == NULL) return NULL;
    PyObject *out = NULL;
    Py_ssize_t n = PyBytes_GET_SIZE(data), pos = self->f.skip;
    if (pos) {
        if (pos >= n) {
            self->f.skip = pos - n;
            Py_DECREF(data);
            Py_RETURN_NONE;
        }
        self->f.skip = 0;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
    const char *who = self->f.client ? "client" : "server";
    Py_ssize_t limit = self->f.max, inspect = self->f.client ? 1 : MY_INSPECT;
    int server = !self->f.client, cont = self->cont;
    Py_ssize_t size = self->size;
    int command = s->phase == MY_COMMAND;
    while (n - pos >= 4) {
        Py_ssize_t length = d[pos] | d[pos + 1] << 8 | d[pos + 2] << 16;
        Py_ssize_t end = pos + 4 + length;
        int seq = d[pos + 3];
        if (cont) {
            size += length;
            if (size > limit) {
                out = PyUnicode_FromFormat("%s sent a message of more than %zd bytes", who, limit);
                goto done;
            }
            cont = length == MY_LONG;
        } else {
            Py_ssize_t need;
            if (command)
                need = length < inspect ? length : inspect;
            else {
                PyObject *head = PyObject_CallMethod((PyObject *)self, "_need", "ni", length, seq);
                if (head == NULL) goto done;
                if (PyUnicode_Check(head)) {
                    out = head;
                    goto done;
                }
                need = PyLong_AsSsize_t(head);
                Py_DECREF(head);
                if (need == -1 && PyErr_Occurred()) goto done;
            }
            if (pos + 4 + need > n) break;
            if (length > limit) {
                out = PyUnicode_FromFormat("%s sent a packet of %zd bytes (limit %zd)", who, length,
                                           limit);
                goto done;
            }
            size = length;
            cont = length == MY_LONG;
            if (command && server) {
                int r = s->r;
                if (r == R_ROWS && length && d[pos + 4] < 0xFE)
                    ; /* a row */
                else if (r == R_COLS && s->left > 1)
                    s->left -= 1; /* a column definition, not the last */
                else if (outcome(my_response(self, data, pos + 4, length), &out) != 0)
                    goto done;
            } else {
                if (command && seq == 0) { /* a command */
                    if (!length) {
                        out = PyUnicode_FromString("client sent an empty command");
                        goto done;
                    }
                    int cmd = d[pos + 4];
                    s->fresh = 0;
                    if (cmd == 0x01)
                        s->ended = 1;
                    else if (cmd != 0x18 && cmd != 0x19) {
                        PyObject *c = PyLong_FromLong(cmd);
                        if (c == NULL) goto done;
                        int fail = PyList_Append(s->queue, c);
                        Py_DECREF(c);
                        if (fail < 0) goto done;
                    }
                } else {
                    PyObject *res = PyObject_CallMethod((PyObject *)self, "_packet", "Onni", data,
                                                        pos + 4, length, seq);
                    if (outcome(res, &out) != 0) goto done;
                }
                if (s->opaque) {
                    out = Py_None;
                    Py_INCREF(out);
                    goto done;
                }
                command = s->phase == MY_COMMAND;
            }
        }
        if (end >= n) {
            self->f.skip = end - n;
            self->cont = (char)cont;
            self->size = size;
            out = Py_None;
            Py_INCREF(out);
            goto done;
        }
        pos = end;
    }
    if (keep(&self->f.partial, data, pos, n) == 0) {
        self->cont = (char)cont;
        self->size = size;
        out = Py_None;
        Py_INCREF(out);
    }
done:
    Py_DECREF(data);
    return out;
}

static PyMethodDef MysqlFramer_methods[] = {
    {"walk", (PyCFunction)MysqlFramer_walk, METH_O, "One read: an error string or None."},
    {NULL}};

static PyMemberDef MysqlFramer_members[] = {
    {"size", T_PYSSIZET, offsetof(MysqlFramer, size), 0, NULL},
    {"cont", T_BOOL, offsetof(MysqlFramer, cont), 0, NULL},
    {NULL}};

static PyTypeObject MysqlFramerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "quiesce._dbfast.MysqlFramer",
    .tp_basicsize = sizeof(MysqlFramer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "One direction of a MySQL session (quiesce.dataplane.mysql._Framer).",
    .tp_base = &FramerType,
    .tp_init = (initproc)MysqlFramer_init,
    .tp_methods = MysqlFramer_methods,
    .tp_members = MysqlFramer_members,
};

/* ---------------------------------------------------------------- module */

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "quiesce._dbfast",
    "The database relays' framers in C (quiesce.dataplane.dbfast).", -1, NULL};

PyMODINIT_FUNC PyInit__dbfast(void) {
    const char *front = "QPBEDCSHFXdcfp", *back = "RSKZCDTEINnst123AGHWdcVv";
    for (const char *c = front; *c; c++) pg_front_ok[(unsigned char)*c] = 1;
    for (const char *c = back; *c; c++) pg_back_ok[(unsigned char)*c] = 1;
    if (PyType_Ready(&FramerType) < 0 || PyType_Ready(&PgSessionType) < 0 || PyType_Ready(&PgFramerType) < 0 ||
        PyType_Ready(&MysqlSessionType) < 0 || PyType_Ready(&MysqlFramerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "PgSession", (PyObject *)&PgSessionType) < 0 ||
        PyModule_AddObjectRef(m, "PgFramer", (PyObject *)&PgFramerType) < 0 ||
        PyModule_AddObjectRef(m, "MysqlSession", (PyObject *)&MysqlSessionType) < 0 ||
        PyModule_AddObjectRef(m, "MysqlFramer", (PyObject *)&MysqlFramerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
