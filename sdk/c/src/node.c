/* The life of one node replica (docs/PROTOCOL.md): configuration, control, status, events.
 *
 *   flujo_init   bind inputs, connect outputs, control and status
 *   flujo_next   (first call: report ready; producers wait for start) the next item, or STOP
 *   flujo_close  end of stream on every output and wait for the readers' release; or, held
 *                for a graceful restart, PAUSE instead and wait to be dismissed; or, failed
 *                under a restart policy, nothing (the successor continues the stream)
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

double flujo_clock(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

void node_log(flujo_node *node, const char *format, ...) {
    va_list args;
    va_start(args, format);
    fprintf(stderr, "flujo node %s.%d: ", node->name ? node->name : "?", node->replica);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
}

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
static void pack_stats(flujo_node *node, msgpack_packer *p) {
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

static void report_stats(flujo_node *node, const char *kind) {
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

static void release_all_ports(flujo_node *node) {
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

static void apply_control(flujo_node *node) {
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

static bool control_pending(flujo_node *node) {
    int events = 0;
    size_t size = sizeof events;
    zmq_getsockopt(node->commands, ZMQ_EVENTS, &events, &size);
    return events & ZMQ_POLLIN;
}

/* Waits until one of `sockets` is ready for `events`, a command arrives, or the poll interval
 * passes; applies the commands, reports stats when due, and pauses held readers. */
void node_wait(flujo_node *node, void **sockets, int count, short events) {
    zmq_pollitem_t items[count + 1];
    for (int i = 0; i < count; i++) items[i] = (zmq_pollitem_t){.socket = sockets[i], .events = events};
    items[count] = (zmq_pollitem_t){.socket = node->commands, .events = ZMQ_POLLIN};
    zmq_poll(items, count + 1, POLL_INTERVAL_MS);
    if (items[count].revents & ZMQ_POLLIN) apply_control(node);
    if (flujo_clock() >= node->next_report) report_stats(node, "stats");
    for (int e = 0; e < node->nedges; e++) edge_pause_held(node, &node->edges[e]);
}

/* Between two items: now and then, apply commands and report stats. */
static void after_item(flujo_node *node) {
    double now = flujo_clock();
    if (now < node->next_control) return;
    node->next_control = now + CONTROL_INTERVAL;
    if (control_pending(node)) apply_control(node);
    if (now >= node->next_report) report_stats(node, "stats");
    for (int e = 0; e < node->nedges; e++) {
        edge_flush_stale(node, &node->edges[e], now); /* a batch waits a few milliseconds at most */
        edge_pause_held(node, &node->edges[e]);
    }
}

/* -- configuration (section 2) ------------------------------------------------------------- */

static flujo_node *init_failed(flujo_node *node, const char *why) {
    fprintf(stderr, "flujo node %s: %s\n", node && node->name ? node->name : "(no name)", why);
    if (node) flujo_close(node);
    return NULL;
}

flujo_node *flujo_init(void) {
    const char *text = getenv("FLUJO_NODE_CONFIG");
    if (!text) return init_failed(NULL, "no configuration; the launcher sets FLUJO_NODE_CONFIG");
    flujo_node *node = calloc(1, sizeof *node);
    node->stopped = true; /* until it is set up: flujo_close only frees */
    node->config = json_parse(text, node->error, sizeof node->error);
    if (!node->config || node->config->type != JSON_OBJECT) return init_failed(node, "FLUJO_NODE_CONFIG is not a JSON object");
    const json_value *config = node->config;
    if (json_number(config, "protocol", 1) != PROTOCOL_VERSION) return init_failed(node, "protocol version not supported");
    node->flow = json_string(config, "flow", "");
    node->name = json_string(config, "node", NULL);
    node->replica = (int)json_number(config, "replica", 0);
    node->generation = (int64_t)json_number(config, "generation", 0);
    node->next_seq = (int64_t)json_number(config, "seq_start", 0);
    const char *kind = json_string(config, "kind", ""), *control = json_string(config, "control", NULL);
    const char *status = json_string(config, "status", NULL);
    node->role = strcmp(kind, "producer") == 0 ? ROLE_PRODUCER : strcmp(kind, "consumer") == 0 ? ROLE_CONSUMER : ROLE_PROCESSOR;
    node->zip = strcmp(json_string(config, "join", "zip"), "merge") != 0;
    node->skip_errors = strcmp(json_string(config, "on_error", "fail"), "skip") == 0;
    node->restart_policy = strcmp(json_string(config, "restart", "no"), "no") != 0;
    if (!node->name || !control || !status) return init_failed(node, "the configuration lacks node, control or status");
    node->context = zmq_ctx_new();
    /* control first: commands sent while the sockets are made are not missed */
    char identity[300];
    int linger = 0, status_linger = 2000; /* status is small and the launcher always reads it */
    snprintf(identity, sizeof identity, "hello:%s.%d", node->name, node->replica);
    node->commands = zmq_socket(node->context, ZMQ_SUB);
    zmq_setsockopt(node->commands, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(node->commands, ZMQ_SUBSCRIBE, "", 0);
    zmq_setsockopt(node->commands, ZMQ_SUBSCRIBE, identity, strlen(identity));
    node->reporter = zmq_socket(node->context, ZMQ_PUSH);
    zmq_setsockopt(node->reporter, ZMQ_LINGER, &status_linger, sizeof status_linger);
    if (zmq_connect(node->commands, control) != 0 || zmq_connect(node->reporter, status) != 0)
        return init_failed(node, "cannot connect to the launcher's control or status endpoint");
    const json_value *inputs = json_get(config, "inputs"), *outputs = json_get(config, "outputs");
    node->nports = inputs && inputs->type == JSON_ARRAY ? (int)inputs->count : 0;
    node->nedges = outputs && outputs->type == JSON_ARRAY ? (int)outputs->count : 0;
    node->ports = calloc((size_t)node->nports + 1, sizeof *node->ports);
    node->edges = calloc((size_t)node->nedges + 1, sizeof *node->edges);
    int nports = node->nports, nedges = node->nedges;
    node->nports = node->nedges = 0; /* counted up as they open, so a failure closes what opened */
    for (int i = 0; i < nports; i++, node->nports++)
        if (port_open(node, &node->ports[i], inputs->items[i]) != 0) return init_failed(node, node->error);
    for (int i = 0; i < nedges; i++, node->nedges++)
        if (edge_open(node, &node->edges[i], outputs->items[i]) != 0) return init_failed(node, node->error);
    if ((node->role == ROLE_PRODUCER) != (node->nports == 0))
        return init_failed(node, node->nports ? "a producer has no inputs" : "a processor or consumer needs inputs");
    int values = node->zip && node->nports > 1 ? node->nports : 1;
    node->event_messages = calloc((size_t)values, sizeof *node->event_messages);
    node->values = calloc((size_t)values, sizeof *node->values);
    node->value_ports = calloc((size_t)values, sizeof *node->value_ports);
    for (int i = 0; i < values; i++) node->value_ports[i] = node->nports ? node->ports[i].name : NULL;
    node->event.values = node->values;
    node->event.ports = node->value_ports;
    node->event.owner = node;
    node->next_report = flujo_clock() + STATS_INTERVAL;
    node->stopped = false;
    return node;
}

const char *flujo_node_name(const flujo_node *node) { return node->name; }
int flujo_replica(const flujo_node *node) { return node->replica; }
const char *flujo_error(const flujo_node *node) { return node->error; }

const char *flujo_arg_string(const flujo_node *node, const char *name, const char *fallback) {
    return json_string(json_get(node->config, "args"), name, fallback);
}

double flujo_arg_number(const flujo_node *node, const char *name, double fallback) {
    const json_value *value = json_get(json_get(node->config, "args"), name);
    if (value && value->type == JSON_BOOL) return value->boolean ? 1 : 0;
    return value && value->type == JSON_NUMBER ? value->number : fallback;
}

/* -- events ------------------------------------------------------------------------------------ */

static void release_event(flujo_node *node) {
    for (int i = 0; i < node->event.count; i++) {
        message_free(node->event_messages[i]);
        node->event_messages[i] = NULL;
    }
    node->event.count = 0;
}

/* Exactly one message per input sequence number on every edge: SKIP where no result went. */
static void answer(flujo_node *node, int64_t seq) {
    outgoing *skip = NULL;
    for (int e = 0; e < node->nedges; e++) {
        output_edge *edge = &node->edges[e];
        if (edge->answered == seq && node->answered) continue;
        if (!skip) skip = outgoing_marker(node, KIND_SKIP, seq);
        edge_deal(node, edge, skip, seq);
        edge->answered = seq;
    }
    outgoing_free(skip);
    node->items_out++;
}

/* The user is done with the current event. */
static void finish_event(flujo_node *node) {
    if (!node->in_event) return;
    node->in_event = false;
    node->busy += flujo_clock() - node->event_since;
    if (node->event.type == FLUJO_INPUT) {
        if (node->role == ROLE_PROCESSOR) answer(node, node->event.seq);
    } else if (node->answered) { /* a producer's item: nothing sent means nothing this time */
        answer(node, node->event.seq);
        node->next_seq++;
    }
    node->answered = false;
    node->item_failed = false;
    release_event(node);
}

static const flujo_event *stop_event(flujo_node *node, flujo_stop_cause cause) {
    node->event = (flujo_event){.type = FLUJO_STOP, .cause = cause, .values = node->values, .ports = node->value_ports,
                                .owner = node};
    node->stopped = true;
    node_report(node, "ending", NULL);
    return &node->event;
}

static const flujo_event *begin_event(flujo_node *node, flujo_event_type type, int64_t seq) {
    node->event.type = type;
    node->event.cause = FLUJO_STOP_NONE;
    node->event.seq = seq;
    node->in_event = true;
    node->event_since = flujo_clock();
    return &node->event;
}

static const flujo_event *next_produce(flujo_node *node) {
    if (!node->started)
        while (!node->started && !node->stop_requested && !node->drain_requested) node_wait(node, NULL, 0, 0);
    else
        after_item(node);
    if (node->drain_requested) return stop_event(node, FLUJO_STOP_HANDOVER);
    if (node->stop_requested) return stop_event(node, FLUJO_STOP_COMMAND);
    if (node->nobody_reads) return stop_event(node, FLUJO_STOP_NO_READERS);
    node->event.count = 0;
    node->event.port = NULL;
    return begin_event(node, FLUJO_PRODUCE, node->next_seq);
}

const flujo_event *flujo_next(flujo_node *node) {
    if (node->stopped) return &node->event;
    finish_event(node);
    if (!node->ready_sent) {
        node->ready_sent = true;
        node_report(node, "ready", NULL);
    }
    if (node->failed) return stop_event(node, FLUJO_STOP_FAILED);
    if (node->role == ROLE_PRODUCER) return next_produce(node);
    for (;;) {
        after_item(node);
        if (node->stop_requested) return stop_event(node, FLUJO_STOP_COMMAND);
        int rc = join_next(node, node->event_messages);
        if (rc == JOIN_ENDED) return stop_event(node, FLUJO_STOP_ENDED);
        if (rc == JOIN_DRAINED) return stop_event(node, FLUJO_STOP_HANDOVER);
        if (rc == JOIN_STOP_READING)
            return stop_event(node, node->stop_requested ? FLUJO_STOP_COMMAND : FLUJO_STOP_NO_READERS);
        node->items_in++;
        int count = node->zip && node->nports > 1 ? node->nports : 1;
        bool skip = false;
        node->event.count = count;
        for (int i = 0; i < count; i++) {
            skip |= node->event_messages[i]->kind == KIND_SKIP;
            node->values[i] = node->event_messages[i]->item;
        }
        if (node->nports > 1 && !node->zip) node->value_ports[0] = node->event.port;
        int64_t seq = node->event_messages[0]->seq;
        if (!skip) return begin_event(node, FLUJO_INPUT, seq);
        if (node->role == ROLE_PROCESSOR) answer(node, seq); /* filtered upstream: SKIP on */
        release_event(node);
    }
}

/* -- sending ------------------------------------------------------------------------------------ */

int flujo_send(flujo_node *node, const char *port, flujo_item *item) {
    int rc = 0;
    if (!node->in_event || node->role == ROLE_CONSUMER) {
        snprintf(node->error, sizeof node->error, "flujo_send outside an input or produce event");
        rc = -1;
    } else if (node->item_failed) {
        snprintf(node->error, sizeof node->error, "flujo_send after flujo_fail for this item");
        rc = -1;
    } else if (item_is_broken(item)) {
        snprintf(node->error, sizeof node->error, "the item has a bad array (dtype, shape or size)");
        rc = -1;
    }
    for (int e = 0; rc == 0 && e < node->nedges; e++)
        if (strcmp(node->edges[e].port, port) == 0 && node->edges[e].answered == node->event.seq && node->answered) {
            snprintf(node->error, sizeof node->error, "a second result on port \"%s\" for item %lld", port,
                     (long long)node->event.seq);
            rc = -1;
        }
    if (rc != 0) {
        flujo_item_free(item);
        return rc;
    }
    if (!node->answered) /* the first result for this item: mark every edge unanswered */
        for (int e = 0; e < node->nedges; e++) node->edges[e].answered = -1;
    node->answered = true;
    outgoing *out = item_to_outgoing(node, item, node->event.seq);
    flujo_item_free(item);
    double started = flujo_clock();
    for (int e = 0; e < node->nedges; e++) {
        output_edge *edge = &node->edges[e];
        if (strcmp(edge->port, port) != 0) continue;
        edge_deal(node, edge, out, node->event.seq);
        edge->answered = node->event.seq;
    }
    node->event_since += flujo_clock() - started; /* waiting for readers is not busy time */
    outgoing_free(out);
    return 0;
}

int flujo_forward(flujo_node *node, const char *port, const flujo_event *event, int index) {
    if (index < 0 || index >= event->count) {
        snprintf(node->error, sizeof node->error, "the event has no value %d", index);
        return -1;
    }
    flujo_item *item = flujo_item_new();
    flujo_item_pack_received(item, event, &event->values[index]);
    return flujo_send(node, port, item);
}

void flujo_fail(flujo_node *node, const char *format, ...) {
    char message[1024];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    if (node->skip_errors && node->in_event) { /* counted and skipped, as the manifest asks */
        node->errors++;
        node->item_failed = true;
        node_log(node, "skipped item %lld: %s", (long long)node->event.seq, message);
        return;
    }
    if (!node->failed) {
        node->failed = true;
        node->failure = strdup(message);
    }
    if (node->in_event) { /* the failing item gets no result */
        node->in_event = false;
        node->answered = false;
        release_event(node);
    }
}

/* -- the end (section 7) ------------------------------------------------------------------------ */

static void report_error(flujo_node *node) {
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

/* Graceful restart: PAUSE behind everything sent, report drained, wait to be dismissed. */
static void hand_over(flujo_node *node) {
    msgpack_sbuffer payload;
    msgpack_packer packer;
    int total = 0;
    for (int e = 0; e < node->nedges; e++) total += node->edges[e].n;
    int readers[total + 1], edge_of[total + 1], count = 0;
    for (int e = 0; e < node->nedges; e++) {
        int sent = edge_pause_all(node, &node->edges[e], readers + count);
        for (int i = 0; i < sent; i++) edge_of[count + i] = e;
        count += sent;
    }
    msgpack_sbuffer_init(&payload);
    msgpack_packer_init(&packer, &payload, msgpack_sbuffer_write);
    msgpack_pack_map(&packer, 2);
    pack_string(&packer, "stats");
    pack_stats(node, &packer);
    pack_string(&packer, "readers");
    msgpack_pack_array(&packer, (size_t)count);
    for (int i = 0; i < count; i++) {
        msgpack_pack_array(&packer, 3);
        pack_string(&packer, node->edges[edge_of[i]].target);
        msgpack_pack_int(&packer, readers[i]);
        pack_string(&packer, node->edges[edge_of[i]].target_port);
    }
    node_report(node, "drained", &payload);
    msgpack_sbuffer_destroy(&payload);
    while (!node->dismissed) node_wait(node, NULL, 0, 0);
}

/* End of stream behind the last item on every edge, to every replica; then keep the sockets
 * open until every reader released the port (a PUSH closed at once can lose its tail). */
static void end_outputs(flujo_node *node) {
    outgoing *eos = outgoing_marker(node, KIND_EOS, 0);
    for (int e = 0; e < node->nedges; e++) edge_broadcast(node, &node->edges[e], eos);
    outgoing_free(eos);
    report_stats(node, "finished");
    for (;;) {
        bool all = true;
        for (int e = 0; e < node->nedges; e++) all &= edge_all_released(&node->edges[e]);
        if (all) break;
        node_wait(node, NULL, 0, 0);
    }
}

int flujo_close(flujo_node *node) {
    int status = 0, linger = 0;
    if (!node) return 1;
    if (node->context && !node->stopped) { /* closed before the events ran out: a stop of its own */
        if (node->in_event) finish_event(node);
        if (!node->ready_sent) node_report(node, "ready", NULL);
        stop_event(node, node->failed ? FLUJO_STOP_FAILED : FLUJO_STOP_COMMAND);
    }
    if (node->context && node->ready_sent) {
        if (node->failed) {
            report_error(node);
            status = 1;
        }
        if (node->event.cause == FLUJO_STOP_HANDOVER) {
            hand_over(node);
        } else if (node->failed && node->restart_policy) {
            linger = 1000; /* a successor continues the stream: no end of stream; what is queued may leave */
        } else {
            release_all_ports(node);
            end_outputs(node); /* also after a failure: what was sent must reach the readers */
        }
    } else if (node->context && node->failed) {
        report_error(node);
        status = 1;
    }
    if (node->in_event) release_event(node);
    for (int i = 0; i < node->nports; i++) port_close(&node->ports[i]);
    for (int i = 0; i < node->nedges; i++) edge_close(&node->edges[i], linger);
    if (node->commands) zmq_close(node->commands);
    if (node->reporter) zmq_close(node->reporter);
    if (node->context) zmq_ctx_term(node->context);
    for (int i = 0; i < node->nholds; i++) free(node->holds[i].node);
    for (int i = 0; i < node->nresumed; i++) free(node->resumed[i].node);
    free(node->holds);
    free(node->resumed);
    free(node->ports);
    free(node->edges);
    free(node->event_messages);
    free(node->values);
    free(node->value_ports);
    free(node->failure);
    json_free(node->config);
    free(node);
    return status;
}
