/* The life of one node replica (docs/PROTOCOL.md): configuration, waiting, events, the end.
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
    if (!node->config || node->config->type != JSON_OBJECT) {
        char why[400];
        snprintf(why, sizeof why, "FLUJO_NODE_CONFIG is not a JSON object: %s", node->config ? "" : node->error);
        return init_failed(node, why);
    }
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
    if (security_load(node) != 0) return init_failed(node, node->error);
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
    security_before_connect(node, node->commands, control);
    security_before_connect(node, node->reporter, status);
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
        if (port_open(node, &node->ports[i], inputs->items[i]) != 0) {
            port_close(&node->ports[i]); /* every socket must be closed, or the context never ends */
            return init_failed(node, node->error);
        }
    for (int i = 0; i < nedges; i++, node->nedges++)
        if (edge_open(node, &node->edges[i], outputs->items[i]) != 0) {
            edge_close(&node->edges[i], 0);
            return init_failed(node, node->error);
        }
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
    security_close(node); /* the context's end ended the ZAP handler */
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
