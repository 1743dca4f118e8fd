/* A node's side of the control plane: commands in (section 4), reports out (section 5), and the
 * graceful restarts in progress that the commands announce (section 8). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* -- status channel (section 5) ----------------------------------------------------------- */

void node_report(flujo_node *node, const char *kind, const msgpack_sbuffer *payload) {
    msgpack_sbuffer frame;
    msgpack_packer packer;
    msgpack_sbuffer_init(&frame);
    msgpack_packer_init(&packer, &frame, msgpack_sbuffer_write);
    msgpack_pack_array(&packer, 4);
    pack_string(&packer, kind);
    pack_string(&packer, node->name);
    msgpack_pack_int(&packer, node->replica);
    if (payload) msgpack_sbuffer_write(&frame, payload->data, payload->size);
    else msgpack_pack_nil(&packer);
    zmq_send(node->reporter, frame.data, frame.size, 0);
    msgpack_sbuffer_destroy(&frame);
}

static void pack_counter_map(msgpack_packer *p, output_edge *edges, int n, bool dropped) {
    msgpack_pack_map(p, (size_t)n);
    for (int i = 0; i < n; i++) {
        pack_string(p, edges[i].label);
        msgpack_pack_uint64(p, dropped ? edges[i].dropped : edges[i].sent);
    }
}

/* Cumulative counters; "sent" counts DATA and SKIP, so the launcher can derive queue fill. */
void pack_stats(flujo_node *node, msgpack_packer *p) {
    uint64_t late = 0, dropped = 0;
    for (int i = 0; i < node->nports; i++) {
        late += node->ports[i].late;
        dropped += node->ports[i].dropped;
    }
    msgpack_pack_map(p, 11);
    pack_string(p, "items_in"), msgpack_pack_uint64(p, node->items_in);
    pack_string(p, "items_out"), msgpack_pack_uint64(p, node->items_out);
    pack_string(p, "busy"), msgpack_pack_double(p, node->busy);
    pack_string(p, "errors"), msgpack_pack_uint64(p, node->errors);
    pack_string(p, "late"), msgpack_pack_uint64(p, late);
    pack_string(p, "dropped"), msgpack_pack_uint64(p, dropped);
    pack_string(p, "refused"), msgpack_pack_uint64(p, node->refused);
    pack_string(p, "next_seq"), msgpack_pack_int64(p, node->next_seq);
    pack_string(p, "received");
    msgpack_pack_map(p, (size_t)node->nports);
    for (int i = 0; i < node->nports; i++) {
        pack_string(p, node->ports[i].name);
        msgpack_pack_uint64(p, node->ports[i].received);
    }
    pack_string(p, "sent"), pack_counter_map(p, node->edges, node->nedges, false);
    pack_string(p, "dropped_sent"), pack_counter_map(p, node->edges, node->nedges, true);
}

void report_stats(flujo_node *node, const char *kind) {
    msgpack_sbuffer payload;
    msgpack_packer packer;
    msgpack_sbuffer_init(&payload);
    msgpack_packer_init(&packer, &payload, msgpack_sbuffer_write);
    pack_stats(node, &packer);
    node_report(node, kind, &payload);
    msgpack_sbuffer_destroy(&payload);
    node->next_report = flujo_clock() + STATS_INTERVAL;
}

void report_position(flujo_node *node, output_edge *edge, int index, int64_t seq) {
    msgpack_sbuffer payload;
    msgpack_packer packer;
    msgpack_sbuffer_init(&payload);
    msgpack_packer_init(&packer, &payload, msgpack_sbuffer_write);
    msgpack_pack_array(&packer, 4);
    pack_string(&packer, edge->target);
    msgpack_pack_int(&packer, index);
    pack_string(&packer, edge->target_port);
    msgpack_pack_int64(&packer, seq);
    node_report(node, "position", &payload);
    msgpack_sbuffer_destroy(&payload);
}

void release_all_ports(flujo_node *node) {
    msgpack_sbuffer payload;
    msgpack_packer packer;
    int count = 0;
    for (int i = 0; i < node->nports; i++) count += !node->ports[i].released;
    if (!count) return;
    msgpack_sbuffer_init(&payload);
    msgpack_packer_init(&packer, &payload, msgpack_sbuffer_write);
    msgpack_pack_array(&packer, (size_t)count);
    for (int i = 0; i < node->nports; i++) {
        if (node->ports[i].released) continue;
        node->ports[i].released = true;
        pack_string(&packer, node->ports[i].name);
    }
    node_report(node, "released", &payload);
    msgpack_sbuffer_destroy(&payload);
}

/* -- holds (graceful restarts in progress, section 8) -------------------------------------- */

static hold *find_in(hold *list, int count, const char *target, int replica);

hold *holds_find(flujo_node *node, const char *target, int replica) {
    return node->nholds ? find_in(node->holds, node->nholds, target, replica) : NULL;
}

static hold *find_in(hold *list, int count, const char *target, int replica) {
    for (int i = 0; i < count; i++)
        if (list[i].replica == replica && strcmp(list[i].node, target) == 0) return &list[i];
    return NULL;
}

/* The launcher replays its whole history to every new subscriber, hold and resume included:
 * a hold of a generation already resumed is over (generations only grow) and is ignored. */
static void hold_start(flujo_node *node, const char *target, int replica, int64_t generation) {
    hold *resumed = find_in(node->resumed, node->nresumed, target, replica);
    if (resumed && generation <= resumed->generation) return;
    hold *h = holds_find(node, target, replica);
    if (h && h->generation == generation) return;
    if (!h) {
        node->holds = realloc(node->holds, (size_t)(node->nholds + 1) * sizeof *node->holds);
        h = &node->holds[node->nholds++];
        h->node = strdup(target);
        h->replica = replica;
    }
    h->generation = generation;
    h->has_limit = h->drained = false;
}

static void note_resumed(flujo_node *node, const char *target, int replica, int64_t generation) {
    hold *resumed = find_in(node->resumed, node->nresumed, target, replica);
    if (!resumed) {
        node->resumed = realloc(node->resumed, (size_t)(node->nresumed + 1) * sizeof *node->resumed);
        resumed = &node->resumed[node->nresumed++];
        *resumed = (hold){.node = strdup(target), .replica = replica, .generation = -1};
    }
    if (generation > resumed->generation) resumed->generation = generation;
}

static void hold_end(flujo_node *node, hold *h) {
    free(h->node);
    *h = node->holds[--node->nholds];
}

/* -- control channel (section 4) ------------------------------------------------------------ */

static bool is_int(const msgpack_object *o) {
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
}

static bool str_equals(const msgpack_object *o, const char *text) {
    size_t n = strlen(text);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && memcmp(o->via.str.ptr, text, n) == 0;
}

/* payload[i] as a C string in `out` (false when it is no string). */
static bool str_at(const msgpack_object *payload, uint32_t i, char *out, size_t size) {
    if (payload->via.array.size <= i || payload->via.array.ptr[i].type != MSGPACK_OBJECT_STR) return false;
    const msgpack_object_str *s = &payload->via.array.ptr[i].via.str;
    snprintf(out, size, "%.*s", (int)s->size, s->ptr);
    return true;
}

static bool int_at(const msgpack_object *payload, uint32_t i, int64_t *out) {
    if (payload->via.array.size <= i || !is_int(&payload->via.array.ptr[i])) return false;
    *out = payload->via.array.ptr[i].via.i64;
    return true;
}

static void recompute_readers(flujo_node *node) {
    bool all = node->nedges > 0;
    for (int i = 0; i < node->nedges && all; i++) all = edge_all_released(&node->edges[i]);
    node->nobody_reads = all;
}

static void apply_command(flujo_node *node, const char *topic, size_t length, const msgpack_object *payload) {
    char who[256], port[256];
    int64_t replica, generation, extra, to_replica;
#define TOPIC(name) (length == sizeof(name) - 1 && memcmp(topic, name, length) == 0)
    if (TOPIC("start")) {
        node->started = true;
    } else if (TOPIC("stop")) {
        for (uint32_t i = 0; i < payload->via.array.size; i++)
            if (str_equals(&payload->via.array.ptr[i], node->name)) node->stop_requested = true;
    } else if (TOPIC("released")) {
        if (!str_at(payload, 0, who, sizeof who) || !int_at(payload, 1, &replica) || !str_at(payload, 2, port, sizeof port))
            return;
        for (int e = 0; e < node->nedges; e++) {
            output_edge *edge = &node->edges[e];
            if (replica >= 0 && replica < edge->n && strcmp(edge->target, who) == 0 &&
                strcmp(edge->target_port, port) == 0)
                edge->released[replica] = true;
        }
        recompute_readers(node);
    } else if (TOPIC("gone")) {
        if (!str_at(payload, 0, who, sizeof who) || !int_at(payload, 1, &replica)) return;
        if (payload->via.array.size >= 4) { /* only for the named reader */
            if (!str_at(payload, 2, port, sizeof port) || !int_at(payload, 3, &to_replica) ||
                strcmp(port, node->name) != 0 || to_replica != node->replica)
                return;
        }
        for (int p = 0; p < node->nports; p++)
            if (strcmp(node->ports[p].source, who) == 0) port_sender_ended(node, &node->ports[p], (int)replica);
    } else if (TOPIC("hold") || TOPIC("align") || TOPIC("resume") || TOPIC("dismiss")) {
        if (!str_at(payload, 0, who, sizeof who) || !int_at(payload, 1, &replica) || !int_at(payload, 2, &generation))
            return;
        bool me = strcmp(who, node->name) == 0 && replica == node->replica && generation == node->generation;
        hold *h = holds_find(node, who, (int)replica);
        if (TOPIC("resume")) note_resumed(node, who, (int)replica, generation);
        if (TOPIC("hold")) {
            hold_start(node, who, (int)replica, generation);
            if (me) node->drain_requested = true;
        } else if (!h || h->generation != generation) {
            return;
        } else if (TOPIC("align")) {
            if (int_at(payload, 3, &extra)) {
                h->has_limit = true;
                h->limit = extra;
            }
        } else if (TOPIC("dismiss")) {
            h->drained = true;
            if (me) node->dismissed = true;
        } else {
            hold_end(node, h);
        }
    }
#undef TOPIC
}

void apply_control(flujo_node *node) {
    for (;;) {
        zmq_msg_t topic, body;
        zmq_msg_init(&topic);
        if (zmq_msg_recv(&topic, node->commands, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&topic);
            return;
        }
        zmq_msg_init(&body);
        bool has_body = zmq_msg_more(&topic) && zmq_msg_recv(&body, node->commands, 0) >= 0;
        while (zmq_msg_more(has_body ? &body : &topic)) { /* extra frames: not ours to read */
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            zmq_msg_recv(&extra, node->commands, 0);
            bool more = zmq_msg_more(&extra);
            zmq_msg_close(&extra);
            if (!more) break;
        }
        msgpack_zone zone;
        msgpack_object payload = {.type = MSGPACK_OBJECT_ARRAY};
        size_t offset = 0;
        msgpack_zone_init(&zone, 512);
        if (has_body && (msgpack_unpack(zmq_msg_data(&body), zmq_msg_size(&body), &offset, &zone, &payload) !=
                             MSGPACK_UNPACK_SUCCESS ||
                         payload.type != MSGPACK_OBJECT_ARRAY)) {
            node->refused++;
            node_log(node, "refused a malformed command");
        } else {
            apply_command(node, zmq_msg_data(&topic), zmq_msg_size(&topic), &payload);
        }
        msgpack_zone_destroy(&zone);
        zmq_msg_close(&body);
        zmq_msg_close(&topic);
    }
}

bool control_pending(flujo_node *node) {
    int events = 0;
    size_t size = sizeof events;
    zmq_getsockopt(node->commands, ZMQ_EVENTS, &events, &size);
    return events & ZMQ_POLLIN;
}

void report_error(flujo_node *node) {
    msgpack_sbuffer payload;
    msgpack_packer packer;
    msgpack_sbuffer_init(&payload);
    msgpack_packer_init(&packer, &payload, msgpack_sbuffer_write);
    msgpack_pack_map(&packer, 2);
    pack_string(&packer, "message"), pack_string(&packer, node->failure);
    pack_string(&packer, "traceback"), pack_string(&packer, node->failure);
    node_report(node, "error", &payload);
    msgpack_sbuffer_destroy(&payload);
}
