/* A consumer writing every item it gets as one JSON line, to the file args.path (default: stdout).
 * Arrays are written as {"dtype": ..., "shape": [...], "sum": ...} (the sum of their bytes).
 * With args { fail_on = "TEXT" }, an item equal to that string fails as user code would. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <flujo_node.h>

static void write_string(FILE *out, const char *text, size_t size) {
    fputc('"', out);
    for (size_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
        else if (c < 0x20) fprintf(out, "\\u%04x", c);
        else fputc(c, out);
    }
    fputc('"', out);
}

/* Shortest exact form, with a point so that readers see a float; NaN and infinities as Python writes them. */
static void write_float(FILE *out, double value) {
    char text[40];
    if (value != value) {
        fputs("NaN", out);
        return;
    }
    if (value > 1.7976931348623157e308 || value < -1.7976931348623157e308) {
        fputs(value > 0 ? "Infinity" : "-Infinity", out);
        return;
    }
    for (int digits = 15; digits <= 17; digits++) { /* the fewest digits that read back exactly */
        snprintf(text, sizeof text, "%.*g", digits, value);
        if (strtod(text, NULL) == value) break;
    }
    fputs(text, out);
    if (!strpbrk(text, ".e")) fputs(".0", out);
}

static void write_json(FILE *out, const flujo_event *event, const msgpack_object *o) {
    flujo_array array;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: fputs("null", out); break;
    case MSGPACK_OBJECT_BOOLEAN: fputs(o->via.boolean ? "true" : "false", out); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: fprintf(out, "%" PRIu64, o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: fprintf(out, "%" PRId64, o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: write_float(out, o->via.f64); break;
    case MSGPACK_OBJECT_STR: write_string(out, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: fprintf(out, "{\"bytes\": %" PRIu32 "}", o->via.bin.size); break;
    case MSGPACK_OBJECT_ARRAY:
        fputc('[', out);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i) fputs(", ", out);
            write_json(out, event, &o->via.array.ptr[i]);
        }
        fputc(']', out);
        break;
    case MSGPACK_OBJECT_MAP:
        fputc('{', out);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *key = &o->via.map.ptr[i].key;
            if (i) fputs(", ", out);
            if (key->type == MSGPACK_OBJECT_STR) write_string(out, key->via.str.ptr, key->via.str.size);
            else fputs("\"?\"", out);
            fputs(": ", out);
            write_json(out, event, &o->via.map.ptr[i].val);
        }
        fputc('}', out);
        break;
    case MSGPACK_OBJECT_EXT:
        if (flujo_event_array(event, o, &array)) {
            uint64_t sum = 0;
            for (size_t i = 0; i < array.nbytes; i++) sum += ((const uint8_t *)array.data)[i];
            fprintf(out, "{\"dtype\": \"%s\", \"shape\": [", array.dtype);
            for (int d = 0; d < array.ndim; d++) fprintf(out, d ? ", %" PRId64 : "%" PRId64, array.shape[d]);
            fprintf(out, "], \"sum\": %" PRIu64 "}", sum);
            break;
        }
        /* fall through */
    default: fputs("null", out);
    }
}

int main(void) {
    flujo_node *node = flujo_init();
    if (!node) return 1;
    const char *path = flujo_arg_string(node, "path", NULL);
    FILE *out = path ? fopen(path, "a") : stdout;
    if (!out) {
        flujo_fail(node, "cannot open %s for writing", path);
        return flujo_close(node);
    }
    const char *fail_on = flujo_arg_string(node, "fail_on", NULL);
    const flujo_event *event;
    while ((event = flujo_next(node))->type == FLUJO_INPUT) {
        const msgpack_object *first = &event->values[0];
        if (fail_on && first->type == MSGPACK_OBJECT_STR && first->via.str.size == strlen(fail_on) &&
            memcmp(first->via.str.ptr, fail_on, first->via.str.size) == 0) {
            flujo_fail(node, "cannot handle item %lld", (long long)event->seq);
            continue;
        }
        if (event->count > 1) fputc('[', out); /* a zip: one value per port */
        for (int i = 0; i < event->count; i++) {
            if (i) fputs(", ", out);
            write_json(out, event, &event->values[i]);
        }
        fputs(event->count > 1 ? "]\n" : "\n", out);
        fflush(out); /* a line per item, as it arrives: tests and tails see it at once */
    }
    if (path) fclose(out);
    return flujo_close(node);
}
