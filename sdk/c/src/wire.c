/* Frames on the wire (docs/PROTOCOL.md, section 3): decoding what arrives, encoding what leaves. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_FRAMES 1024

struct flujo_item {
    msgpack_sbuffer buffer;
    msgpack_packer packer;
    int narrays;
    zmq_msg_t *arrays;
    bool broken;
};

/* -- small helpers ------------------------------------------------------------------------ */

void pack_string(msgpack_packer *packer, const char *text) {
    size_t n = strlen(text);
    msgpack_pack_str(packer, n);
    msgpack_pack_str_body(packer, text, n);
}

void pack_header(msgpack_sbuffer *buffer, int kind, int64_t seq, const char *node, int replica) {
    msgpack_packer packer;
    msgpack_packer_init(&packer, buffer, msgpack_sbuffer_write);
    msgpack_pack_array(&packer, 5);
    msgpack_pack_int(&packer, PROTOCOL_VERSION);
    msgpack_pack_int(&packer, kind);
    msgpack_pack_int64(&packer, seq);
    pack_string(&packer, node);
    msgpack_pack_int(&packer, replica);
}

static bool is_int(const msgpack_object *o) {
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
}

static bool is_str(const msgpack_object *o, const char *text) {
    size_t n = strlen(text);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && memcmp(o->via.str.ptr, text, n) == 0;
}

const msgpack_object *flujo_map_get(const msgpack_object *map, const char *key) {
    if (!map || map->type != MSGPACK_OBJECT_MAP) return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (is_str(&map->via.map.ptr[i].key, key)) return &map->via.map.ptr[i].val;
    return NULL;
}

/* numpy's type string of a plain numeric or bool dtype, as the protocol allows them (section 3):
 * "|b1", "|i1", "|u1", and "<" or ">" with i2 u2 i4 u4 i8 u8 f2 f4 f8 c8 c16. Its item size; 0
 * for anything else (an unknown kind, "<q4", or a date "<M8[ns]" are refused, as Python does). */
static size_t dtype_itemsize(const char *dtype, size_t length) {
    static const char *const wide[] = {"i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8", "c8", "c16"};
    if (length < 3 || length > 4) return 0;
    const char *code = dtype + 1;
    size_t code_length = length - 1;
    if (dtype[0] == '|') {
        bool byte = code_length == 2 && code[1] == '1' && (code[0] == 'b' || code[0] == 'i' || code[0] == 'u');
        return byte ? 1 : 0;
    }
    if (dtype[0] != '<' && dtype[0] != '>') return 0;
    for (size_t i = 0; i < sizeof wide / sizeof *wide; i++)
        if (strlen(wide[i]) == code_length && memcmp(wide[i], code, code_length) == 0)
            return (size_t)atoi(code + 1);
    return 0;
}

/* -- messages that arrive ---------------------------------------------------------------------- */

void queue_push(queue *q, message *m) {
    m->next = NULL;
    if (q->tail) q->tail->next = m;
    else q->head = m;
    q->tail = m;
    q->count++;
}

message *queue_pop(queue *q) {
    message *m = q->head;
    if (m) {
        q->head = m->next;
        if (!q->head) q->tail = NULL;
        q->count--;
        m->next = NULL;
    }
    return m;
}

void message_free(message *m) {
    if (!m) return;
    for (int i = 0; i < m->nframes; i++) zmq_msg_close(&m->frames[i]);
    free(m->frames);
    free(m->arrays);
    if (m->zone) msgpack_zone_free(m->zone);
    free(m);
}

/* Finds the arrays (ext type 1) in a decoded body and checks each against its frame. */
static const char *find_arrays(message *m, const msgpack_object *o, bool allowed) {
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            const char *problem = find_arrays(m, &o->via.array.ptr[i], allowed);
            if (problem) return problem;
        }
    } else if (o->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const char *problem = find_arrays(m, &o->via.map.ptr[i].val, allowed);
            if (problem) return problem;
        }
    } else if (o->type == MSGPACK_OBJECT_EXT && o->via.ext.type == ARRAY_EXT) {
        if (!allowed) return "an array in a batch";
        msgpack_zone zone;
        msgpack_object meta;
        size_t offset = 0;
        const char *problem = NULL;
        msgpack_zone_init(&zone, 256);
        if (msgpack_unpack(o->via.ext.ptr, o->via.ext.size, &offset, &zone, &meta) != MSGPACK_UNPACK_SUCCESS ||
            meta.type != MSGPACK_OBJECT_ARRAY || meta.via.array.size < 3 || !is_int(&meta.via.array.ptr[0]) ||
            meta.via.array.ptr[1].type != MSGPACK_OBJECT_STR || meta.via.array.ptr[2].type != MSGPACK_OBJECT_ARRAY) {
            problem = "malformed array reference";
        } else {
            const msgpack_object *index = &meta.via.array.ptr[0], *dtype = &meta.via.array.ptr[1];
            const msgpack_object *shape = &meta.via.array.ptr[2];
            array_ref ref = {.object = o};
            size_t itemsize = dtype_itemsize(dtype->via.str.ptr, dtype->via.str.size);
            uint64_t count = 1;
            if (index->type != MSGPACK_OBJECT_POSITIVE_INTEGER || index->via.u64 < 2 ||
                index->via.u64 > (uint64_t)m->nframes)
                problem = "array refers to a frame the message does not have";
            else if (!itemsize)
                problem = "array with an unknown dtype";
            else if (shape->via.array.size > FLUJO_MAX_DIMS)
                problem = "array with too many dimensions";
            for (uint32_t d = 0; !problem && d < shape->via.array.size; d++) {
                const msgpack_object *extent = &shape->via.array.ptr[d];
                if (extent->type != MSGPACK_OBJECT_POSITIVE_INTEGER || extent->via.u64 > (1ull << 40))
                    problem = "array with a bad shape";
                else {
                    ref.array.shape[d] = (int64_t)extent->via.u64;
                    count *= extent->via.u64;
                    if (count > (1ull << 48)) problem = "array with a bad shape";
                }
            }
            if (!problem) {
                ref.frame = &m->frames[index->via.u64 - 1];
                ref.array.data = zmq_msg_data(ref.frame);
                ref.array.nbytes = zmq_msg_size(ref.frame);
                ref.array.itemsize = itemsize;
                ref.array.ndim = (int)shape->via.array.size;
                memcpy(ref.array.dtype, dtype->via.str.ptr, dtype->via.str.size);
                if (count * itemsize != ref.array.nbytes) problem = "array size does not match its frame";
            }
            if (!problem) {
                array_ref *grown = realloc(m->arrays, (size_t)(m->narrays + 1) * sizeof *grown);
                if (!grown) problem = "out of memory";
                else {
                    m->arrays = grown;
                    m->arrays[m->narrays++] = ref;
                }
            }
        }
        msgpack_zone_destroy(&zone);
        return problem;
    }
    return NULL;
}

/* A message holding `frames` (body first); decodes the body. NULL and `problem` when malformed. */
static message *decode_item(int kind, int64_t seq, int replica, zmq_msg_t *frames, int nframes, bool arrays,
                            const char **problem) {
    message *m = calloc(1, sizeof *m);
    m->kind = kind;
    m->seq = seq;
    m->replica = replica;
    m->frames = frames;
    m->nframes = nframes;
    if (kind == KIND_SKIP) return m;
    m->zone = msgpack_zone_new(512);
    size_t offset = 0;
    if (msgpack_unpack(zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), &offset, m->zone, &m->item) !=
        MSGPACK_UNPACK_SUCCESS) {
        *problem = "a body that is not one msgpack value";
    } else {
        *problem = find_arrays(m, &m->item, arrays);
    }
    if (*problem) {
        message_free(m);
        return NULL;
    }
    return m;
}

static void refuse(flujo_node *node, input_port *port, const char *problem) {
    node->refused++;
    node_log(node, "refused a message on port \"%s\": %s", port->name, problem);
}

static void close_frames(zmq_msg_t *frames, int count) {
    for (int i = 0; i < count; i++) zmq_msg_close(&frames[i]);
    free(frames);
}

/* One BATCH: each item goes on as a DATA message of its own, numbered on from `seq`; all of
 * them or, when one is malformed, none. */
static const char *accept_batch(flujo_node *node, input_port *port, int64_t seq, int replica, zmq_msg_t *body) {
    msgpack_zone zone;
    msgpack_object items;
    size_t offset = 0;
    const char *problem = NULL;
    queue decoded = {0};
    msgpack_zone_init(&zone, 1024);
    if (msgpack_unpack(zmq_msg_data(body), zmq_msg_size(body), &offset, &zone, &items) != MSGPACK_UNPACK_SUCCESS ||
        items.type != MSGPACK_OBJECT_ARRAY) {
        problem = "a batch whose body is not a msgpack array";
    }
    for (uint32_t i = 0; !problem && i < items.via.array.size; i++) {
        msgpack_sbuffer buffer;
        msgpack_packer packer;
        msgpack_sbuffer_init(&buffer);
        msgpack_packer_init(&packer, &buffer, msgpack_sbuffer_write);
        msgpack_pack_object(&packer, items.via.array.ptr[i]);
        zmq_msg_t *frames = malloc(sizeof *frames);
        zmq_msg_init_size(&frames[0], buffer.size);
        memcpy(zmq_msg_data(&frames[0]), buffer.data, buffer.size);
        msgpack_sbuffer_destroy(&buffer);
        message *m = decode_item(KIND_DATA, seq + i, replica, frames, 1, false, &problem);
        if (m) queue_push(&decoded, m);
    }
    message *m;
    while ((m = queue_pop(&decoded))) {
        if (problem) message_free(m);
        else port_accept(node, port, m);
    }
    msgpack_zone_destroy(&zone);
    return problem;
}

int receive_message(flujo_node *node, input_port *port, int flags) {
    zmq_msg_t header;
    zmq_msg_init(&header);
    if (zmq_msg_recv(&header, port->socket, flags) < 0) {
        zmq_msg_close(&header);
        return 0;
    }
    /* Once the first part of a message is here, all of it is. */
    int nframes = 0, capacity = 0;
    zmq_msg_t *frames = NULL;
    bool more = zmq_msg_more(&header), too_many = false;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        zmq_msg_recv(&part, port->socket, 0);
        more = zmq_msg_more(&part);
        if (nframes >= MAX_FRAMES) {
            too_many = true;
            zmq_msg_close(&part);
            continue;
        }
        if (nframes == capacity) {
            capacity = capacity ? capacity * 2 : 4;
            frames = realloc(frames, (size_t)capacity * sizeof *frames);
        }
        zmq_msg_init(&frames[nframes]);
        zmq_msg_move(&frames[nframes++], &part);
        zmq_msg_close(&part);
    }
    msgpack_zone zone;
    msgpack_object h;
    size_t offset = 0;
    const char *problem = NULL;
    msgpack_zone_init(&zone, 256);
    if (too_many)
        problem = "too many frames";
    else if (msgpack_unpack(zmq_msg_data(&header), zmq_msg_size(&header), &offset, &zone, &h) !=
                 MSGPACK_UNPACK_SUCCESS ||
             h.type != MSGPACK_OBJECT_ARRAY || h.via.array.size < 5)
        problem = "malformed header";
    else if (!is_int(&h.via.array.ptr[0]) || h.via.array.ptr[0].via.i64 != PROTOCOL_VERSION)
        problem = "protocol version not supported (this node speaks 1)";
    else if (h.via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER || h.via.array.ptr[1].via.u64 > KIND_PAUSE)
        problem = "unknown message kind";
    else if (!is_int(&h.via.array.ptr[2]) || h.via.array.ptr[3].type != MSGPACK_OBJECT_STR ||
             h.via.array.ptr[4].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
             h.via.array.ptr[4].via.u64 >= (uint64_t)port->senders)
        problem = "malformed header (sequence number, sender or replica)";
    else if (!is_str(&h.via.array.ptr[3], port->source))
        problem = "a message from a node that does not feed this port";
    if (problem) {
        refuse(node, port, problem);
        close_frames(frames, nframes);
    } else {
        int kind = (int)h.via.array.ptr[1].via.u64, replica = (int)h.via.array.ptr[4].via.u64;
        int64_t seq = h.via.array.ptr[2].via.i64;
        if (kind == KIND_EOS || kind == KIND_PAUSE) {
            close_frames(frames, nframes);
            if (kind == KIND_EOS) {
                port_sender_ended(node, port, replica);
            } else {
                char sender[256];
                snprintf(sender, sizeof sender, "%.*s", (int)h.via.array.ptr[3].via.str.size,
                         h.via.array.ptr[3].via.str.ptr);
                port_pause(node, port, replica, sender);
            }
        } else {
            if (port->paused[replica]) port->paused[replica] = false; /* it sends again: a successor runs */
            if (kind == KIND_SKIP) {
                close_frames(frames, nframes);
                port_accept(node, port, decode_item(KIND_SKIP, seq, replica, NULL, 0, false, &problem));
            } else if (nframes < 1) {
                problem = "a data message without a body frame";
                close_frames(frames, nframes);
            } else if (kind == KIND_BATCH) {
                problem = accept_batch(node, port, seq, replica, &frames[0]);
                close_frames(frames, nframes);
            } else {
                message *m = decode_item(KIND_DATA, seq, replica, frames, nframes, true, &problem);
                if (m) port_accept(node, port, m);
            }
            if (problem) refuse(node, port, problem);
        }
    }
    msgpack_zone_destroy(&zone);
    zmq_msg_close(&header);
    return 1;
}

/* -- messages that leave ------------------------------------------------------------------------ */

static outgoing *outgoing_new(int nframes) {
    outgoing *out = calloc(1, sizeof *out);
    out->nframes = nframes;
    out->frames = calloc((size_t)nframes, sizeof *out->frames);
    return out;
}

static void set_frame(zmq_msg_t *frame, const void *data, size_t size) {
    zmq_msg_init_size(frame, size);
    memcpy(zmq_msg_data(frame), data, size);
}

outgoing *outgoing_marker(flujo_node *node, int kind, int64_t seq) {
    msgpack_sbuffer header;
    msgpack_sbuffer_init(&header);
    pack_header(&header, kind, seq, node->name, node->replica);
    outgoing *out = outgoing_new(1);
    set_frame(&out->frames[0], header.data, header.size);
    msgpack_sbuffer_destroy(&header);
    out->items = kind == KIND_SKIP;
    return out;
}

outgoing *outgoing_copy(const outgoing *source) {
    outgoing *out = outgoing_new(source->nframes);
    out->bytes = source->bytes;
    out->items = source->items;
    for (int i = 0; i < source->nframes; i++) {
        zmq_msg_init(&out->frames[i]);
        zmq_msg_copy(&out->frames[i], (zmq_msg_t *)&source->frames[i]); /* shares the data, no copy */
    }
    return out;
}

void outgoing_free(outgoing *out) {
    if (!out) return;
    for (int i = 0; i < out->nframes; i++) zmq_msg_close(&out->frames[i]);
    free(out->frames);
    free(out);
}

/* Sends a copy of `out` (the frames' data is shared, not copied). With ZMQ_DONTWAIT, -1 and
 * EAGAIN before anything is sent; after the first part, the rest cannot block. */
int outgoing_send(void *socket, outgoing *out, int flags) {
    for (int i = 0; i < out->nframes; i++) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        zmq_msg_copy(&part, &out->frames[i]);
        int more = i + 1 < out->nframes ? ZMQ_SNDMORE : 0;
        if (zmq_msg_send(&part, socket, (i == 0 ? flags : 0) | more) < 0) {
            zmq_msg_close(&part);
            return -1;
        }
    }
    return 0;
}

static void free_buffer(void *data, void *hint) {
    (void)hint;
    free(data);
}

outgoing *item_to_outgoing(flujo_node *node, flujo_item *item, int64_t seq) {
    outgoing *out = outgoing_new(2 + item->narrays);
    out->items = 1;
    msgpack_sbuffer header;
    msgpack_sbuffer_init(&header);
    pack_header(&header, KIND_DATA, seq, node->name, node->replica);
    set_frame(&out->frames[0], header.data, header.size);
    msgpack_sbuffer_destroy(&header);
    size_t size = item->buffer.size;
    char *body = msgpack_sbuffer_release(&item->buffer); /* the body frame takes the buffer */
    zmq_msg_init_data(&out->frames[1], body, size, free_buffer, NULL);
    out->bytes = size;
    for (int i = 0; i < item->narrays; i++) {
        zmq_msg_init(&out->frames[2 + i]);
        zmq_msg_move(&out->frames[2 + i], &item->arrays[i]);
        out->bytes += zmq_msg_size(&out->frames[2 + i]);
    }
    return out;
}

/* -- the item API ---------------------------------------------------------------------------- */

flujo_item *flujo_item_new(void) {
    flujo_item *item = calloc(1, sizeof *item);
    msgpack_sbuffer_init(&item->buffer);
    msgpack_packer_init(&item->packer, &item->buffer, msgpack_sbuffer_write);
    return item;
}

msgpack_packer *flujo_item_packer(flujo_item *item) { return &item->packer; }

void flujo_item_free(flujo_item *item) {
    if (!item) return;
    msgpack_sbuffer_destroy(&item->buffer);
    for (int i = 0; i < item->narrays; i++) zmq_msg_close(&item->arrays[i]);
    free(item->arrays);
    free(item);
}

bool item_is_broken(const flujo_item *item) { return item->broken; }

/* Packs the array reference (ext type 1) for the frame that will be sent next. */
static zmq_msg_t *add_array(flujo_item *item, const char *dtype, int ndim, const int64_t *shape) {
    msgpack_sbuffer meta;
    msgpack_packer packer;
    msgpack_sbuffer_init(&meta);
    msgpack_packer_init(&packer, &meta, msgpack_sbuffer_write);
    msgpack_pack_array(&packer, 3);
    msgpack_pack_int(&packer, item->narrays + 2);
    pack_string(&packer, dtype);
    msgpack_pack_array(&packer, (size_t)ndim);
    for (int d = 0; d < ndim; d++) msgpack_pack_int64(&packer, shape[d]);
    msgpack_pack_ext_with_body(&item->packer, meta.data, meta.size, ARRAY_EXT);
    msgpack_sbuffer_destroy(&meta);
    item->arrays = realloc(item->arrays, (size_t)(item->narrays + 1) * sizeof *item->arrays);
    return &item->arrays[item->narrays++];
}

int flujo_item_pack_array(flujo_item *item, const void *data, size_t nbytes, const char *dtype, int ndim,
                          const int64_t *shape, void (*release)(void *data, void *hint), void *hint) {
    size_t itemsize = dtype ? dtype_itemsize(dtype, strlen(dtype)) : 0;
    uint64_t count = 1;
    if (!itemsize || ndim < 0 || ndim > FLUJO_MAX_DIMS || (!data && nbytes)) {
        item->broken = true;
        return -1;
    }
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) {
            item->broken = true;
            return -1;
        }
        count *= (uint64_t)shape[d];
    }
    if (count * itemsize != nbytes) {
        item->broken = true;
        return -1;
    }
    zmq_msg_t *frame = add_array(item, dtype, ndim, shape);
    if (release)
        zmq_msg_init_data(frame, (void *)data, nbytes, release, hint); /* zero-copy */
    else
        set_frame(frame, data, nbytes);
    return 0;
}

static const array_ref *find_ref(const flujo_event *event, const msgpack_object *object) {
    const flujo_node *node = event->owner;
    for (int v = 0; v < event->count; v++) {
        const message *m = node->event_messages[v];
        if (object == &event->values[v]) object = &m->item; /* the event's copy of a top-level value */
        for (int i = 0; m && i < m->narrays; i++)
            if (m->arrays[i].object == object) return &m->arrays[i];
    }
    return NULL;
}

bool flujo_event_array(const flujo_event *event, const msgpack_object *object, flujo_array *array) {
    const array_ref *ref = object && event->type == FLUJO_INPUT ? find_ref(event, object) : NULL;
    if (ref && array) *array = ref->array;
    return ref != NULL;
}

static int pack_received(flujo_item *item, const flujo_event *event, const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_ARRAY:
        msgpack_pack_array(&item->packer, o->via.array.size);
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (pack_received(item, event, &o->via.array.ptr[i]) < 0) return -1;
        return 0;
    case MSGPACK_OBJECT_MAP:
        msgpack_pack_map(&item->packer, o->via.map.size);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            msgpack_pack_object(&item->packer, o->via.map.ptr[i].key);
            if (pack_received(item, event, &o->via.map.ptr[i].val) < 0) return -1;
        }
        return 0;
    case MSGPACK_OBJECT_EXT:
        if (o->via.ext.type == ARRAY_EXT) {
            const array_ref *ref = find_ref(event, o);
            if (!ref) return -1;
            zmq_msg_t *frame = add_array(item, ref->array.dtype, ref->array.ndim, ref->array.shape);
            zmq_msg_init(frame);
            zmq_msg_copy(frame, ref->frame); /* the received frame itself, shared */
            return 0;
        }
        return msgpack_pack_object(&item->packer, *o); /* other extensions go as they came */
    default:
        return msgpack_pack_object(&item->packer, *o);
    }
}

int flujo_item_pack_received(flujo_item *item, const flujo_event *event, const msgpack_object *object) {
    if (!object || event->type != FLUJO_INPUT || pack_received(item, event, object) < 0) {
        item->broken = true;
        return -1;
    }
    return 0;
}
