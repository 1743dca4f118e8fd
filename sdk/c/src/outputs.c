/* Output side: one PUSH socket per downstream replica, per edge (docs/PROTOCOL.md, sections 6 and 8).
 *
 * Items are dealt to the first live replica with room; end of stream goes to every one. A
 * held replica (graceful restart) gets a PAUSE behind everything sent to it before; for a
 * reader that zips several ports, senders first agree on the sequence number to pause after. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int edge_open(flujo_node *node, output_edge *edge, const json_value *config) {
    const json_value *endpoints = json_get(config, "endpoints");
    const char *policy = json_string(config, "policy", "block");
    edge->port = json_string(config, "port", "out");
    edge->target = json_string(config, "target", NULL);
    edge->target_port = json_string(config, "target_port", NULL);
    edge->hwm = (int)json_number(config, "hwm", 1000);
    edge->aligned = json_bool(config, "aligned", false);
    edge->policy = strcmp(policy, "block") == 0 ? POLICY_BLOCK : POLICY_DROP_NEWEST;
    if (!edge->target || !edge->target_port || !endpoints || endpoints->type != JSON_ARRAY || !endpoints->count) {
        snprintf(node->error, sizeof node->error, "an output needs target, target_port and endpoints");
        return -1;
    }
    size_t label = strlen(edge->target) + strlen(edge->target_port) + 2;
    edge->label = malloc(label);
    snprintf(edge->label, label, "%s/%s", edge->target, edge->target_port);
    edge->n = (int)endpoints->count;
    edge->sockets = calloc((size_t)edge->n, sizeof *edge->sockets);
    edge->released = calloc((size_t)edge->n, sizeof *edge->released);
    edge->paused = malloc((size_t)edge->n * sizeof *edge->paused);
    edge->reported = malloc((size_t)edge->n * sizeof *edge->reported);
    edge->position = calloc((size_t)edge->n, sizeof *edge->position);
    edge->last_seq = -1;
    edge->answered = -1;
    msgpack_sbuffer_init(&edge->batch);
    for (int i = 0; i < edge->n; i++) {
        const json_value *endpoint = endpoints->items[i];
        int linger = 0, reconnect = 10; /* ms: a restarted replica is found again quickly */
        edge->paused[i] = edge->reported[i] = -1;
        edge->sockets[i] = zmq_socket(node->context, ZMQ_PUSH);
        zmq_setsockopt(edge->sockets[i], ZMQ_SNDHWM, &edge->hwm, sizeof edge->hwm);
        zmq_setsockopt(edge->sockets[i], ZMQ_LINGER, &linger, sizeof linger); /* we wait for release instead */
        zmq_setsockopt(edge->sockets[i], ZMQ_RECONNECT_IVL, &reconnect, sizeof reconnect);
        if (endpoint->type == JSON_STRING) security_before_connect(node, edge->sockets[i], endpoint->string);
        if (endpoint->type != JSON_STRING || zmq_connect(edge->sockets[i], endpoint->string) != 0) {
            snprintf(node->error, sizeof node->error, "cannot connect output \"%s\" to %s", edge->port,
                     endpoint->type == JSON_STRING ? endpoint->string : "(not a string)");
            return -1;
        }
    }
    return 0;
}

void edge_close(output_edge *edge, int linger_ms) {
    for (int i = 0; i < edge->n; i++) {
        if (!edge->sockets[i]) continue;
        zmq_setsockopt(edge->sockets[i], ZMQ_LINGER, &linger_ms, sizeof linger_ms);
        zmq_close(edge->sockets[i]);
    }
    outgoing *out;
    while ((out = edge->held_back)) {
        edge->held_back = out->next;
        outgoing_free(out);
    }
    msgpack_sbuffer_destroy(&edge->batch);
    free(edge->sockets);
    free(edge->released);
    free(edge->paused);
    free(edge->reported);
    free(edge->position);
    free(edge->label);
}

bool edge_all_released(const output_edge *edge) {
    for (int i = 0; i < edge->n; i++)
        if (!edge->released[i]) return false;
    return true;
}

/* Sends to that replica, held or not, waiting while its queue is full; false when it was released. */
static bool send_to(flujo_node *node, output_edge *edge, int index, outgoing *out, int items) {
    while (!edge->released[index]) {
        if (outgoing_send(edge->sockets[index], out, ZMQ_DONTWAIT) == 0) {
            edge->sent += (uint64_t)items;
            return true;
        }
        node_wait(node, &edge->sockets[index], 1, ZMQ_POLLOUT); /* and look at commands: released? */
    }
    return false;
}

/* -- batches of small items ------------------------------------------------------------------- */

/* The waiting batch as one BATCH message: a msgpack array of the bodies. */
static outgoing *take_batch(flujo_node *node, output_edge *edge, int *items) {
    unsigned char prefix[3];
    size_t length = 1;
    *items = edge->batched;
    if (edge->batched < 16) {
        prefix[0] = (unsigned char)(0x90 | edge->batched);
    } else {
        prefix[0] = 0xdc, prefix[1] = (unsigned char)(edge->batched >> 8), prefix[2] = (unsigned char)edge->batched;
        length = 3;
    }
    outgoing *out = outgoing_marker(node, KIND_BATCH, edge->batch_seq);
    out->items = edge->batched;
    out->frames = realloc(out->frames, 2 * sizeof *out->frames);
    out->nframes = 2;
    zmq_msg_init_size(&out->frames[1], length + edge->batch.size);
    memcpy(zmq_msg_data(&out->frames[1]), prefix, length);
    memcpy((char *)zmq_msg_data(&out->frames[1]) + length, edge->batch.data, edge->batch.size);
    edge->batch.size = 0;
    edge->batched = 0;
    return out;
}

/* Sends the waiting batch to the single reader, held or not (its items are within any limit). */
static void send_batch_now(flujo_node *node, output_edge *edge) {
    if (!edge->batched) return;
    int items;
    outgoing *out = take_batch(node, edge, &items);
    send_to(node, edge, 0, out, items);
    outgoing_free(out);
}

static bool send_single(flujo_node *node, output_edge *edge, const outgoing *out, int64_t seq, int items);

void edge_flush(flujo_node *node, output_edge *edge) {
    if (!edge->batched) return;
    bool outer = edge->sending;
    int items;
    int64_t last = edge->batch_seq + edge->batched - 1;
    outgoing *out = take_batch(node, edge, &items);
    edge->sending = true;
    send_single(node, edge, out, last, items);
    edge->sending = outer;
    outgoing_free(out);
}

void edge_flush_stale(flujo_node *node, output_edge *edge, double now) {
    if (edge->batched && now - edge->batch_since >= BATCH_WAIT) edge_flush(node, edge);
}

/* -- graceful restarts ------------------------------------------------------------------------ */

/* A zip replica's pause limit; until the launcher announces it, this sender's own position,
 * reported once per hold. */
static int64_t limit_of(flujo_node *node, output_edge *edge, int index, const hold *h) {
    if (h->has_limit) return h->limit;
    if (edge->reported[index] != h->generation) {
        edge->reported[index] = h->generation;
        edge->position[index] = edge->last_seq;
        report_position(node, edge, index, edge->last_seq);
    }
    return edge->position[index];
}

static void pause_replica(flujo_node *node, output_edge *edge, int index, int64_t generation) {
    if (edge->paused[index] == generation) return;
    edge->paused[index] = generation;
    if (edge->aligned) send_batch_now(node, edge);
    outgoing *marker = outgoing_marker(node, KIND_PAUSE, 0);
    send_to(node, edge, index, marker, 0);
    outgoing_free(marker);
}

static void send_pauses(flujo_node *node, output_edge *edge) {
    for (int i = 0; i < edge->n; i++) {
        hold *h = holds_find(node, edge->target, i);
        if (!h || edge->paused[i] == h->generation) continue;
        if (!edge->aligned)
            pause_replica(node, edge, i, h->generation);
        else if (h->has_limit && limit_of(node, edge, i, h) <= edge->last_seq)
            pause_replica(node, edge, i, h->generation); /* sent everything up to the agreed limit */
    }
}

/* Whether the message numbered `seq` must wait for that replica's successor; pauses the
 * replica first when that is due. */
static bool must_wait(flujo_node *node, output_edge *edge, int index, int64_t seq) {
    hold *h = holds_find(node, edge->target, index);
    if (!h) return false;
    if (edge->aligned) {
        if (seq <= limit_of(node, edge, index, h)) return false; /* still for the draining process */
        if (!h->has_limit) return true; /* past our position: wait for the agreed limit, unpaused */
    }
    pause_replica(node, edge, index, h->generation);
    return true;
}

/* Keeps a message for a held zip replica's successor instead of blocking, while its draining
 * process may still need other senders to catch up (blocking would stop a shared upstream). */
static bool hold_back(flujo_node *node, output_edge *edge, const outgoing *out, int items) {
    hold *h = holds_find(node, edge->target, 0);
    if (!edge->aligned || !h || !h->has_limit || h->drained || edge->held_back_bytes >= HOLD_BACK_BYTES)
        return false;
    outgoing *copy = outgoing_copy(out);
    copy->items = items;
    if (edge->held_back_tail) edge->held_back_tail->next = copy;
    else edge->held_back = copy;
    edge->held_back_tail = copy;
    edge->held_back_bytes += copy->bytes;
    return true;
}

static void send_held_back(flujo_node *node, output_edge *edge) {
    outgoing *out;
    while ((out = edge->held_back)) {
        edge->held_back = out->next;
        if (!edge->held_back) edge->held_back_tail = NULL;
        edge->held_back_bytes -= out->bytes;
        send_to(node, edge, 0, out, out->items);
        outgoing_free(out);
    }
}

void edge_pause_held(flujo_node *node, output_edge *edge) {
    if (!node->nholds) {
        if (edge->held_back && !edge->sending) { /* resumed: what was kept back goes first */
            edge->sending = true;
            send_held_back(node, edge);
            edge->sending = false;
        }
        return;
    }
    if (edge->aligned) /* report our position (also in the middle of a send to it) */
        for (int i = 0; i < edge->n; i++) {
            hold *h = holds_find(node, edge->target, i);
            if (h) limit_of(node, edge, i, h);
        }
    if (!edge->sending) {
        edge->sending = true;
        send_pauses(node, edge);
        edge->sending = false;
    }
}

int edge_pause_all(flujo_node *node, output_edge *edge, int *readers) {
    int count = 0;
    edge->sending = true;
    send_held_back(node, edge);
    send_batch_now(node, edge);
    outgoing *marker = outgoing_marker(node, KIND_PAUSE, 0);
    for (int i = 0; i < edge->n; i++)
        if (send_to(node, edge, i, marker, 0)) readers[count++] = i;
    outgoing_free(marker);
    edge->sending = false;
    return count;
}

/* -- dealing ---------------------------------------------------------------------------------- */

/* One reader: wait while it is held (its successor gets the item), then send. */
static bool send_single(flujo_node *node, output_edge *edge, const outgoing *out, int64_t seq, int items) {
    if (seq > edge->last_seq) edge->last_seq = seq;
    while (node->nholds && must_wait(node, edge, 0, seq)) {
        if (edge->released[0]) return false;
        if (hold_back(node, edge, out, items)) return true;
        node_wait(node, NULL, 0, 0); /* only commands: the limit, or the resume */
    }
    if (edge->held_back) send_held_back(node, edge);
    return send_to(node, edge, 0, (outgoing *)out, items);
}

/* One reader, with batches: a small item the reader has no room for waits in a batch. */
static bool deal_single(flujo_node *node, output_edge *edge, const outgoing *out, int64_t seq) {
    bool small = out->nframes == 2 && out->items == 1 && !node->nholds; /* DATA without arrays */
    if (edge->batched) {
        if (small && seq == edge->batch_seq + edge->batched) {
            msgpack_sbuffer_write(&edge->batch, zmq_msg_data(&out->frames[1]), zmq_msg_size(&out->frames[1]));
            edge->batched++;
            edge->last_seq = seq;
            if (edge->batched >= BATCH_ITEMS || edge->batch.size >= BATCH_BYTES) edge_flush(node, edge);
            return true;
        }
        edge_flush(node, edge); /* keep the order: what waits goes first */
    } else if (small && !edge->held_back && !edge->released[0]) {
        edge->last_seq = seq;
        if (outgoing_send(edge->sockets[0], (outgoing *)out, ZMQ_DONTWAIT) == 0) {
            edge->sent++;
        } else { /* the reader is busy: start a batch */
            msgpack_sbuffer_write(&edge->batch, zmq_msg_data(&out->frames[1]), zmq_msg_size(&out->frames[1]));
            edge->batched = 1;
            edge->batch_seq = seq;
            edge->batch_since = flujo_clock();
        }
        return true;
    }
    return send_single(node, edge, out, seq, 1);
}

/* Several replicas: the first live one, in round-robin order, whose queue has room. */
static bool send_replicas(flujo_node *node, output_edge *edge, const outgoing *out, int64_t seq) {
    int live[edge->n];
    void *sockets[edge->n];
    for (;;) {
        int count = 0;
        for (int i = 0; i < edge->n; i++)
            if (!edge->released[i]) live[count++] = i;
        if (!count) return false;
        if (node->nholds) {
            int kept = 0;
            for (int i = 0; i < count; i++)
                if (!must_wait(node, edge, live[i], seq)) live[kept++] = live[i];
            if (!kept) {
                node_wait(node, NULL, 0, 0); /* every live replica is held: wait for a resume */
                continue;
            }
            count = kept;
        }
        for (int offset = 0; offset < count; offset++) {
            int index = live[(edge->next + offset) % count];
            if (outgoing_send(edge->sockets[index], (outgoing *)out, ZMQ_DONTWAIT) == 0) {
                edge->next = (edge->next + offset + 1) % count;
                edge->sent++;
                return true;
            }
        }
        for (int i = 0; i < count; i++) sockets[i] = edge->sockets[live[i]];
        node_wait(node, sockets, count, ZMQ_POLLOUT);
    }
}

/* A realtime reader never makes us wait: a live replica with room, or the item is dropped (counted). */
static bool offer(flujo_node *node, output_edge *edge, const outgoing *out, int64_t seq) {
    for (int i = 0; i < edge->n; i++) {
        if (edge->released[i] || (node->nholds && must_wait(node, edge, i, seq))) continue;
        if (outgoing_send(edge->sockets[i], (outgoing *)out, ZMQ_DONTWAIT) == 0) {
            edge->sent++;
            return true;
        }
    }
    edge->dropped++;
    return true;
}

bool edge_deal(flujo_node *node, output_edge *edge, const outgoing *out, int64_t seq) {
    bool sent;
    edge->sending = true;
    if (node->nholds) send_pauses(node, edge); /* a graceful restart somewhere (rare) */
    if (edge->policy != POLICY_BLOCK) sent = offer(node, edge, out, seq);
    else if (edge->n == 1) sent = deal_single(node, edge, out, seq);
    else sent = send_replicas(node, edge, out, seq);
    edge->sending = false;
    return sent;
}

/* End of stream to every live replica; a held one gets it from its successor. */
void edge_broadcast(flujo_node *node, output_edge *edge, const outgoing *out) {
    edge_flush(node, edge);
    edge->sending = true;
    for (int i = 0; i < edge->n; i++) {
        while (node->nholds && must_wait(node, edge, i, END_SEQ) && !edge->released[i]) node_wait(node, NULL, 0, 0);
        if (edge->held_back) send_held_back(node, edge);
        send_to(node, edge, i, (outgoing *)out, 0);
    }
    edge->sending = false;
}
