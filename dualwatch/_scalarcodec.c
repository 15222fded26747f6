/* Scalar records as VisualDL, TensorBoard and JSON-lines bytes, byte for byte what the Python
 * encoders (protobuf, crc32c, json) write, for the writer's hot path.
 *
 * Why C: a scalar costs the writer about a microsecond per format in Python, nearly all of it
 * interpreter work around the protobuf and json calls (bench/sinks.py); VisualDL needs one
 * record per scalar, so that work cannot be batched in Python. Only plain scalar records
 * (`dualwatch.records.Scalars`: step, wall_ms, {tag: float}) come here; anything unusual raises
 * and the caller encodes that batch in Python instead. tests/test_scalarcodec.py checks every
 * byte against the Python encoders. VisualDL and TensorBoard batches are read with the GIL and
 * encoded without it, so the training thread runs meanwhile on another core.
 *
 * `group` is the writer's grouping of queued scalars into records (records.grouped's rule), in
 * one pass over the queue.
 *
 * Wire formats (proto3: zero and empty fields are left out):
 *   VisualDL  u64le len | Record{1: Value{1: step varint, 2: tag, 3: wall_ms varint, 4: float32}}
 *   TensorBoard u64le len | u32le masked crc32c(len) | Event{1: wall s double, 2: step varint,
 *             5: Summary{1: Value{1: tag, 2: float32}}...} | u32le masked crc32c(event)
 *   JSON lines {"step": S, "wall_time": W, "<tag>": v, ...}\n (repr of floats; "NaN", "Infinity")
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* A growing byte buffer on the raw allocator: usable while the GIL is released. */
typedef struct {
    char *data;
    Py_ssize_t size, capacity;
} Buffer;

static int grow(Buffer *b, Py_ssize_t more) {
    if (b->size + more <= b->capacity) return 0;
    Py_ssize_t capacity = b->capacity ? b->capacity : 4096;
    while (capacity < b->size + more) capacity *= 2;
    char *data = PyMem_RawRealloc(b->data, capacity);
    if (!data) return -1; /* the caller raises MemoryError once it holds the GIL */
    b->data = data;
    b->capacity = capacity;
    return 0;
}

static int put(Buffer *b, const void *bytes, Py_ssize_t n) {
    if (grow(b, n) < 0) return -1;
    memcpy(b->data + b->size, bytes, n);
    b->size += n;
    return 0;
}

static int put_byte(Buffer *b, unsigned char c) { return put(b, &c, 1); }

static int varint_size(uint64_t v) {
    int n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static int put_varint(Buffer *b, uint64_t v) {
    unsigned char out[10];
    int n = 0;
    while (v >= 0x80) {
        out[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (unsigned char)v;
    return put(b, out, n);
}

static int put_le(Buffer *b, uint64_t v, int bytes) {
    unsigned char out[8];
    for (int i = 0; i < bytes; i++) out[i] = (unsigned char)(v >> (8 * i));
    return put(b, out, bytes);
}

static uint32_t float32_bits(double v) {
    float f = (float)v; /* as upb stores a float field: nearest, overflow to infinity */
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return bits;
}

/* -- reading one Scalars record ------------------------------------------------------------- */

typedef struct {
    int64_t step, wall_ms;
    PyObject *values; /* borrowed dict */
} Scalars;

static PyObject *s_step, *s_wall_ms, *s_values, *empty_tuple;

static int read_int64(PyObject *record, PyObject *name, int64_t *out) {
    PyObject *v = PyObject_GetAttr(record, name);
    if (!v) return -1;
    *out = PyLong_AsLongLong(v); /* OverflowError / TypeError: the Python encoder takes it */
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* Fills `s`; the dict is borrowed from the record, which the caller's list keeps alive. */
static int read_record(PyObject *record, Scalars *s) {
    if (read_int64(record, s_step, &s->step) < 0 || read_int64(record, s_wall_ms, &s->wall_ms) < 0) return -1;
    PyObject *values = PyObject_GetAttr(record, s_values);
    if (!values) return -1;
    Py_DECREF(values); /* still referenced by the record */
    if (!PyDict_CheckExact(values)) {
        PyErr_SetString(PyExc_TypeError, "Scalars.values is not a dict");
        return -1;
    }
    s->values = values;
    return 0;
}

static int read_value(PyObject *key, PyObject *value, const char **tag, Py_ssize_t *tag_size, double *number) {
    if (!PyUnicode_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "a tag is not a str");
        return -1;
    }
    *tag = PyUnicode_AsUTF8AndSize(key, tag_size);
    if (!*tag) return -1;
    *number = PyFloat_AsDouble(value);
    return (*number == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* The buffer as bytes, or NULL with the error set (MemoryError if none is); frees the buffer. */
static PyObject *finish(Buffer *b, int failed) {
    if (failed && !PyErr_Occurred()) PyErr_NoMemory();
    PyObject *out = failed ? NULL : PyBytes_FromStringAndSize(b->data ? b->data : "", b->size);
    PyMem_RawFree(b->data);
    return out;
}

/* -- a batch read once, with the GIL, then encoded without it ------------------------------ */

typedef struct {
    const char *tag; /* UTF-8 kept by the str, which the records keep alive */
    Py_ssize_t tag_size;
    double value;
} Point;

typedef struct {
    int64_t step, wall_ms;
    Py_ssize_t first, count; /* its points */
} Row;

typedef struct {
    Row *rows;
    Point *points;
    Py_ssize_t n_rows, n_points;
} Batch;

static void free_batch(Batch *batch) {
    PyMem_RawFree(batch->rows);
    PyMem_RawFree(batch->points);
}

/* Reads records[start:stop] (all Scalars) into `batch`. */
static int read_batch(PyObject *records, Py_ssize_t start, Py_ssize_t stop, Batch *batch) {
    Py_ssize_t n = stop - start, total = 0;
    memset(batch, 0, sizeof *batch);
    batch->rows = PyMem_RawMalloc((n ? n : 1) * sizeof(Row));
    if (!batch->rows) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t capacity = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Scalars s;
        if (read_record(PyList_GET_ITEM(records, start + i), &s) < 0) return -1;
        Py_ssize_t count = PyDict_GET_SIZE(s.values);
        if (total + count > capacity) {
            capacity = (total + count) * 2 + 64;
            Point *points = PyMem_RawRealloc(batch->points, capacity * sizeof(Point));
            if (!points) {
                PyErr_NoMemory();
                return -1;
            }
            batch->points = points;
        }
        Row *row = &batch->rows[i];
        row->step = s.step;
        row->wall_ms = s.wall_ms;
        row->first = total;
        row->count = count;
        PyObject *key, *value;
        Py_ssize_t at = 0;
        while (PyDict_Next(s.values, &at, &key, &value)) {
            Point *point = &batch->points[total++];
            if (read_value(key, value, &point->tag, &point->tag_size, &point->value) < 0) return -1;
        }
        batch->n_rows = i + 1;
    }
    batch->n_points = total;
    return 0;
}

/* -- VisualDL ------------------------------------------------------------------------------ */

static int encode_visualdl(const Batch *batch, Buffer *b) {
    for (Py_ssize_t r = 0; r < batch->n_rows; r++) {
        const Row *row = &batch->rows[r];
        int step_size = row->step ? 1 + varint_size((uint64_t)row->step) : 0;
        int wall_size = row->wall_ms ? 1 + varint_size((uint64_t)row->wall_ms) : 0;
        for (Py_ssize_t k = row->first; k < row->first + row->count; k++) {
            const Point *p = &batch->points[k];
            Py_ssize_t tag_field = p->tag_size ? 1 + varint_size((uint64_t)p->tag_size) + p->tag_size : 0;
            Py_ssize_t value_size = step_size + tag_field + wall_size + 5;
            Py_ssize_t record_size = 1 + varint_size((uint64_t)value_size) + value_size;
            if (put_le(b, (uint64_t)record_size, 8) < 0 || put_byte(b, 0x0a) < 0 ||
                put_varint(b, (uint64_t)value_size) < 0 ||
                (row->step && (put_byte(b, 0x08) < 0 || put_varint(b, (uint64_t)row->step) < 0)) ||
                (p->tag_size && (put_byte(b, 0x12) < 0 || put_varint(b, (uint64_t)p->tag_size) < 0 ||
                                 put(b, p->tag, p->tag_size) < 0)) ||
                (row->wall_ms && (put_byte(b, 0x18) < 0 || put_varint(b, (uint64_t)row->wall_ms) < 0)) ||
                put_byte(b, 0x25) < 0 || put_le(b, float32_bits(p->value), 4) < 0)
                return -1;
        }
    }
    return 0;
}

/* The end of the run of `scalars_type` records that starts at `start`. */
static Py_ssize_t run_end(PyObject *records, Py_ssize_t start, PyObject *scalars_type) {
    Py_ssize_t stop = start, n = PyList_GET_SIZE(records);
    while (stop < n && (PyObject *)Py_TYPE(PyList_GET_ITEM(records, stop)) == scalars_type) stop++;
    return stop;
}

/* (records, start, Scalars) -> (bytes, stop): the run of Scalars records from `start`, read with
 * the GIL and encoded without it, so the training thread runs meanwhile. */
static PyObject *encode_batch(PyObject *args, int (*encode)(const Batch *, Buffer *)) {
    PyObject *records, *scalars_type;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "O!nO", &PyList_Type, &records, &start, &scalars_type)) return NULL;
    if (start < 0 || start > PyList_GET_SIZE(records)) {
        PyErr_SetString(PyExc_IndexError, "start is outside the records");
        return NULL;
    }
    Py_ssize_t stop = run_end(records, start, scalars_type);
    Batch batch;
    Buffer b = {0};
    int failed = read_batch(records, start, stop, &batch) < 0;
    if (!failed) {
        Py_BEGIN_ALLOW_THREADS failed = encode(&batch, &b) < 0;
        Py_END_ALLOW_THREADS
    }
    free_batch(&batch);
    PyObject *out = finish(&b, failed);
    return out ? Py_BuildValue("(Nn)", out, stop) : NULL;
}

static PyObject *visualdl(PyObject *self, PyObject *args) { return encode_batch(args, encode_visualdl); }

/* -- TensorBoard --------------------------------------------------------------------------- */

static uint32_t crc_table[256];

static void make_crc_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
        crc_table[i] = c;
    }
}

static uint32_t masked_crc32c(const char *data, Py_ssize_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < n; i++) c = crc_table[(c ^ (unsigned char)data[i]) & 0xFF] ^ (c >> 8);
    c ^= 0xFFFFFFFFu;
    return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

static int encode_tensorboard(const Batch *batch, Buffer *b) {
    Buffer summary = {0}, event = {0};
    int failed = 0;
    for (Py_ssize_t r = 0; r < batch->n_rows && !failed; r++) {
        const Row *row = &batch->rows[r];
        summary.size = event.size = 0;
        for (Py_ssize_t k = row->first; k < row->first + row->count && !failed; k++) {
            const Point *p = &batch->points[k];
            Py_ssize_t tag_field = p->tag_size ? 1 + varint_size((uint64_t)p->tag_size) + p->tag_size : 0;
            failed = put_byte(&summary, 0x0a) < 0 || put_varint(&summary, (uint64_t)(tag_field + 5)) < 0 ||
                     (p->tag_size && (put_byte(&summary, 0x0a) < 0 ||
                                      put_varint(&summary, (uint64_t)p->tag_size) < 0 ||
                                      put(&summary, p->tag, p->tag_size) < 0)) ||
                     put_byte(&summary, 0x15) < 0 || put_le(&summary, float32_bits(p->value), 4) < 0;
        }
        double wall = (double)row->wall_ms / 1000.0;
        uint64_t wall_bits;
        memcpy(&wall_bits, &wall, 8);
        failed = failed || (wall != 0.0 && (put_byte(&event, 0x09) < 0 || put_le(&event, wall_bits, 8) < 0)) ||
                 (row->step && (put_byte(&event, 0x10) < 0 || put_varint(&event, (uint64_t)row->step) < 0)) ||
                 (summary.size && (put_byte(&event, 0x2a) < 0 || put_varint(&event, (uint64_t)summary.size) < 0 ||
                                   put(&event, summary.data, summary.size) < 0));
        if (failed) break;
        unsigned char header[8];
        for (int k = 0; k < 8; k++) header[k] = (unsigned char)((uint64_t)event.size >> (8 * k));
        failed = put(b, header, 8) < 0 || put_le(b, masked_crc32c((const char *)header, 8), 4) < 0 ||
                 put(b, event.data, event.size) < 0 || put_le(b, masked_crc32c(event.data, event.size), 4) < 0;
    }
    PyMem_RawFree(summary.data);
    PyMem_RawFree(event.data);
    return failed ? -1 : 0;
}

static PyObject *tensorboard(PyObject *self, PyObject *args) { return encode_batch(args, encode_tensorboard); }

/* -- JSON lines ---------------------------------------------------------------------------- */

static int put_repr(Buffer *b, double v) {
    if (!isfinite(v)) {
        const char *text = isnan(v) ? "\"NaN\"" : (v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return put(b, text, (Py_ssize_t)strlen(text));
    }
    char *text = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL); /* float.__repr__ */
    if (!text) return -1;
    int result = put(b, text, (Py_ssize_t)strlen(text));
    PyMem_Free(text);
    return result;
}

/* jsonl(records, start, Scalars, keys, escape) -> (bytes, stop): `keys` caches each tag's JSON
 * string (bytes, quotes included), made by `escape(tag)` (json's encode_basestring_ascii) the
 * first time a tag is seen. Runs with the GIL: a float's repr needs it. */
static PyObject *jsonl(PyObject *self, PyObject *args) {
    PyObject *records, *scalars_type, *keys, *escape;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "O!nOO!O", &PyList_Type, &records, &start, &scalars_type, &PyDict_Type, &keys,
                          &escape))
        return NULL;
    if (start < 0 || start > PyList_GET_SIZE(records)) {
        PyErr_SetString(PyExc_IndexError, "start is outside the records");
        return NULL;
    }
    Py_ssize_t stop = run_end(records, start, scalars_type);
    Buffer b = {0}, wall = {0};
    int64_t last_wall_ms = 0;
    int failed = 0;
    char head[64];
    for (Py_ssize_t i = start; i < stop && !failed; i++) {
        Scalars s;
        if (read_record(PyList_GET_ITEM(records, i), &s) < 0) {
            failed = 1;
            break;
        }
        int length = snprintf(head, sizeof head, "{\"step\": %lld, \"wall_time\": ", (long long)s.step);
        if (i == start || s.wall_ms != last_wall_ms) { /* records of one millisecond share its repr */
            wall.size = 0;
            if (put_repr(&wall, (double)s.wall_ms / 1000.0) < 0) {
                failed = 1;
                break;
            }
            last_wall_ms = s.wall_ms;
        }
        if (put(&b, head, length) < 0 || put(&b, wall.data, wall.size) < 0) {
            failed = 1;
            break;
        }
        PyObject *key, *value;
        Py_ssize_t at = 0;
        while (PyDict_Next(s.values, &at, &key, &value)) {
            if (!PyFloat_Check(value)) { /* json writes ints and bools its own way */
                PyErr_SetString(PyExc_TypeError, "a JSON-lines value is not a float");
                failed = 1;
                break;
            }
            double number = PyFloat_AS_DOUBLE(value);
            PyObject *quoted = PyDict_GetItemWithError(keys, key); /* borrowed */
            if (!quoted) {
                if (PyErr_Occurred() || !PyUnicode_Check(key)) {
                    failed = 1;
                    break;
                }
                if (PyUnicode_CompareWithASCIIString(key, "step") == 0 ||
                    PyUnicode_CompareWithASCIIString(key, "wall_time") == 0) {
                    PyErr_SetString(PyExc_ValueError, "a tag named like a JSON-lines field");
                    failed = 1;
                    break;
                }
                PyObject *text = PyObject_CallOneArg(escape, key);
                if (!text) {
                    failed = 1;
                    break;
                }
                quoted = PyUnicode_AsUTF8String(text);
                Py_DECREF(text);
                if (!quoted || PyDict_SetItem(keys, key, quoted) < 0) {
                    Py_XDECREF(quoted);
                    failed = 1;
                    break;
                }
                Py_DECREF(quoted); /* the dict holds it */
            }
            if (put(&b, ", ", 2) < 0 || put(&b, PyBytes_AS_STRING(quoted), PyBytes_GET_SIZE(quoted)) < 0 ||
                put(&b, ": ", 2) < 0 || put_repr(&b, number) < 0) {
                failed = 1;
                break;
            }
        }
        if (!failed && put(&b, "}\n", 2) < 0) failed = 1;
    }
    PyMem_RawFree(wall.data);
    PyObject *out = finish(&b, failed);
    return out ? Py_BuildValue("(Nn)", out, stop) : NULL;
}

/* -- grouping the writer's queue ----------------------------------------------------------- */

/* A Scalars record without running its (Python) __init__: its three fields set directly.
 *
 * It is left out of the cyclic garbage collector: it holds two ints and a dict of str -> float
 * (itself untracked), so it cannot be part of a cycle, and a record tracked while the writer
 * encodes its batch lives through two young collections and lands in the oldest generation. In
 * a process that imported torch, the full collections those promotions set off took ~0.1 s each,
 * about a third of the training thread's cost per scalar (bench/sinks.py). */
static PyObject *new_scalars(PyObject *scalars_type, PyObject *step, PyObject *ms, PyObject *values) {
    /* object.__new__, which lays out the instance's attributes (inline, on 3.11+) as a plain
     * Scalars(...) call would, minus __init__ */
    PyObject *record = PyBaseObject_Type.tp_new((PyTypeObject *)scalars_type, empty_tuple, NULL);
    if (!record) return NULL;
    if (PyObject_GenericSetAttr(record, s_step, step) < 0 || PyObject_GenericSetAttr(record, s_wall_ms, ms) < 0 ||
        PyObject_GenericSetAttr(record, s_values, values) < 0) {
        Py_DECREF(record);
        return NULL;
    }
    if (PyObject_GC_IsTracked(record)) PyObject_GC_UnTrack(record);
    return record;
}

/* group(items, Scalars) -> (out, bad, last_step): the queued `(tag, value, step, wall seconds)`
 * tuples as Scalars records, one per run of one step and millisecond (a tag seen again starts a
 * new one), with every other queued item kept in its place in `out`. A value that is not a
 * float is read with float() here (a device tensor); one that cannot be is left out and listed
 * in `bad` as (tag, step, error). `last_step` is the step of the last scalar, or None. */
static PyObject *group(PyObject *self, PyObject *args) {
    PyObject *items, *scalars_type;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &items, &PyType_Type, &scalars_type)) return NULL;
    PyObject *out = PyList_New(0), *bad = PyList_New(0);
    PyObject *step = NULL, *values = NULL, *last_step = Py_None;
    long long ms = 0; /* the current record's wall time, when there is one (values != NULL) */
    Py_INCREF(last_step);
    if (!out || !bad) goto fail;
    Py_ssize_t n = PyList_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 4) {
            Py_CLEAR(step); /* another record: the next scalar starts a new one */
            Py_CLEAR(values);
            if (PyList_Append(out, item) < 0) goto fail;
            continue;
        }
        PyObject *tag = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
        PyObject *point_step = PyTuple_GET_ITEM(item, 2), *wall = PyTuple_GET_ITEM(item, 3);
        PyObject *number;
        if (PyFloat_CheckExact(value)) {
            number = value;
            Py_INCREF(number);
        } else {
            number = PyNumber_Float(value);
            if (!number) {
                PyObject *type, *error, *trace;
                PyErr_Fetch(&type, &error, &trace);
                PyErr_NormalizeException(&type, &error, &trace);
                PyObject *entry = Py_BuildValue("(OOO)", tag, point_step, error ? error : Py_None);
                Py_XDECREF(type);
                Py_XDECREF(error);
                Py_XDECREF(trace);
                if (!entry || PyList_Append(bad, entry) < 0) {
                    Py_XDECREF(entry);
                    goto fail;
                }
                Py_DECREF(entry);
                continue;
            }
        }
        double seconds = PyFloat_AsDouble(wall), at = seconds * 1000 + 0.5;
        if (seconds == -1.0 && PyErr_Occurred()) {
            Py_DECREF(number);
            goto fail;
        }
        if (!(fabs(at) < 9e18)) { /* NaN, Inf or beyond int64: the Python grouping says what is wrong */
            PyErr_SetString(PyExc_ValueError, "a wall time out of range");
            Py_DECREF(number);
            goto fail;
        }
        long long point_ms = (long long)at; /* int(): toward zero */
        int same = values != NULL && point_ms == ms;
        if (same && point_step != step) {
            int ne = PyObject_RichCompareBool(point_step, step, Py_NE);
            if (ne < 0) goto fail_point;
            same = !ne;
        }
        if (same) {
            int seen = PyDict_Contains(values, tag);
            if (seen < 0) goto fail_point;
            same = !seen;
        }
        if (!same) {
            Py_XSETREF(values, PyDict_New());
            if (!values) goto fail_point;
            PyObject *wall_ms = PyLong_FromLongLong(point_ms);
            if (!wall_ms) goto fail_point;
            PyObject *record = new_scalars(scalars_type, point_step, wall_ms, values);
            Py_DECREF(wall_ms);
            if (!record) goto fail_point;
            int appended = PyList_Append(out, record);
            Py_DECREF(record);
            if (appended < 0) goto fail_point;
            Py_INCREF(point_step);
            Py_XSETREF(step, point_step);
            ms = point_ms;
        }
        if (PyDict_SetItem(values, tag, number) < 0) goto fail_point;
        Py_DECREF(number);
        Py_INCREF(point_step);
        Py_SETREF(last_step, point_step);
        continue;
    fail_point:
        Py_DECREF(number);
        goto fail;
    }
    Py_XDECREF(step);
    Py_XDECREF(values);
    PyObject *result = Py_BuildValue("(NNN)", out, bad, last_step);
    return result;
fail:
    Py_XDECREF(out);
    Py_XDECREF(bad);
    Py_XDECREF(step);
    Py_XDECREF(values);
    Py_XDECREF(last_step);
    return NULL;
}

static PyMethodDef methods[] = {
    {"group", group, METH_VARARGS, "The writer's queue as Scalars records and the other items, in order."},
    {"visualdl", visualdl, METH_VARARGS, "(records, start, Scalars) -> (VisualDL bytes of the run, its end)."},
    {"tensorboard", tensorboard, METH_VARARGS, "(records, start, Scalars) -> (TensorBoard bytes of the run, its end)."},
    {"jsonl", jsonl, METH_VARARGS, "(records, start, Scalars, keys, escape) -> (JSON-lines bytes of the run, its end)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scalarcodec", NULL, -1, methods};

PyMODINIT_FUNC PyInit__scalarcodec(void) {
    make_crc_table();
    s_step = PyUnicode_InternFromString("step");
    s_wall_ms = PyUnicode_InternFromString("wall_ms");
    s_values = PyUnicode_InternFromString("values");
    empty_tuple = PyTuple_New(0);
    if (!s_step || !s_wall_ms || !s_values || !empty_tuple) return NULL;
    return PyModule_Create(&module);
}
