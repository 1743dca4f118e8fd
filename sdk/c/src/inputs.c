/* Input side: one PULL socket per port, order restoring, and the joins (docs/PROTOCOL.md, section 6).
 *
 * Order: every sender sends in increasing sequence order, so an item may go ahead of a gap
 * once every live sender has gone past the gap: nothing can fill it any more (an item was
 * lost with a crashed sender). Without losses that never happens and the order is exact. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int port_open(flujo_node *node, input_port *port, const json_value *config) {
    const char *endpoint = json_string(config, "endpoint", NULL), *policy = json_string(config, "policy", "block");
    port->name = json_string(config, "port", NULL);
    port->source = json_string(config, "source", "");
    port->hwm = (int)json_number(config, "hwm", 1000);
    port->senders = (int)json_number(config, "senders", 1);
    if (!port->name || !endpoint || port->senders < 1) {
        snprintf(node->error, sizeof node->error, "an input needs port, endpoint and senders >= 1");
        return -1;
    }
    port->policy = strcmp(policy, "drop-newest") == 0   ? POLICY_DROP_NEWEST
                   : strcmp(policy, "drop-oldest") == 0 ? POLICY_DROP_OLDEST
                                                        : POLICY_BLOCK;
    port->reorder = port->senders > 1;
    port->last_seen = malloc((size_t)port->senders * sizeof *port->last_seen);
    for (int i = 0; i < port->senders; i++) port->last_seen[i] = -1;
    port->ended = calloc((size_t)port->senders, sizeof *port->ended);
    port->paused = calloc((size_t)port->senders, sizeof *port->paused);
    port->socket = zmq_socket(node->context, ZMQ_PULL);
    int linger = 0;
    zmq_setsockopt(port->socket, ZMQ_RCVHWM, &port->hwm, sizeof port->hwm);
    zmq_setsockopt(port->socket, ZMQ_LINGER, &linger, sizeof linger);
    if (security_before_bind(node, port->socket, endpoint) != 0) return -1;
    if (zmq_bind(port->socket, endpoint) != 0) {
        snprintf(node->error, sizeof node->error, "cannot bind input \"%s\" to %s: %s", port->name, endpoint,
                 zmq_strerror(zmq_errno()));
        return -1;
    }
    return 0;
}

void port_close(input_port *port) {
    if (port->socket) zmq_close(port->socket);
    message *m;
    while ((m = queue_pop(&port->ready))) message_free(m);
    while ((m = port->held)) {
        port->held = m->next;
        message_free(m);
    }
    free(port->last_seen);
    free(port->ended);
    free(port->paused);
}

static bool senders_done(const input_port *port) { return port->nended >= port->senders; }

/* Every sender has paused or ended: nothing more comes until a successor runs. */
static bool quiet(const input_port *port) {
    for (int i = 0; i < port->senders; i++)
        if (!port->ended[i] && !port->paused[i]) return false;
    return true;
}

/* Every sequence number up to `seq` has arrived (or was given up on) and was delivered. */
static bool complete_through(const input_port *port, int64_t seq) {
    return port->expected > seq && !(port->held && port->held->seq <= seq);
}

/* No live sender can still send anything at or below `seq`. */
static bool senders_past(const input_port *port, int64_t seq) {
    for (int i = 0; i < port->senders; i++)
        if (!port->ended[i] && port->last_seen[i] < seq) return false;
    return true;
}

static void deliver(input_port *port, message *m) {
    queue_push(&port->ready, m);
    port->expected = m->seq + 1;
}

/* Delivers held items that are next in order, or whose gap nobody can fill any more. */
static void release_held(input_port *port) {
    while (port->held) {
        message *m = port->held;
        if (m->seq != port->expected && !senders_past(port, m->seq - 1)) return;
        port->held = m->next;
        deliver(port, m);
    }
}

/* A held replica drains: every held item goes, gaps or not (its readers keep their own order). */
static void take_held(input_port *port) {
    message *m;
    while ((m = port->held)) {
        port->held = m->next;
        deliver(port, m);
    }
}

static void release_port(flujo_node *node, input_port *port) {
    if (port->released) return;
    port->released = true;
    msgpack_sbuffer payload;
    msgpack_packer packer;
    msgpack_sbuffer_init(&payload);
    msgpack_packer_init(&packer, &payload, msgpack_sbuffer_write);
    msgpack_pack_array(&packer, 1);
    pack_string(&packer, port->name);
    node_report(node, "released", &payload);
    msgpack_sbuffer_destroy(&payload);
}

void port_sender_ended(flujo_node *node, input_port *port, int replica) {
    if (replica < 0 || replica >= port->senders || port->ended[replica]) return;
    port->ended[replica] = true;
    port->nended++;
    release_held(port); /* an ended sender can no longer fill a gap */
    if (senders_done(port)) release_port(node, port); /* its senders may close; a merge reads on */
}

/* A sender pauses: until it sends again it is past nothing not yet delivered, so no gap is
 * given up on because of it (its successor may send lower numbers than its last). */
void port_pause(flujo_node *node, input_port *port, int replica, const char *sender) {
    port->paused[replica] = true;
    if (port->reorder && port->last_seen[replica] > port->expected - 1) port->last_seen[replica] = port->expected - 1;
    msgpack_sbuffer payload;
    msgpack_packer packer;
    msgpack_sbuffer_init(&payload);
    msgpack_packer_init(&packer, &payload, msgpack_sbuffer_write);
    msgpack_pack_array(&packer, 3);
    pack_string(&packer, port->name);
    pack_string(&packer, sender);
    msgpack_pack_int(&packer, replica);
    node_report(node, "pause-seen", &payload);
    msgpack_sbuffer_destroy(&payload);
}

void port_accept(flujo_node *node, input_port *port, message *m) {
    (void)node;
    port->received++;
    if (port->policy != POLICY_BLOCK && port->ready.count >= (size_t)port->hwm) {
        port->dropped++;
        if (port->policy == POLICY_DROP_NEWEST) {
            message_free(m);
            return;
        }
        message_free(queue_pop(&port->ready)); /* drop-oldest: the oldest waiting item makes room */
    }
    if (!port->reorder) { /* one sender: in order already */
        deliver(port, m);
        return;
    }
    if (m->seq > port->last_seen[m->replica]) port->last_seen[m->replica] = m->seq;
    if (m->seq == port->expected && !port->held) { /* in order: the usual case */
        deliver(port, m);
    } else if (m->seq < port->expected) {
        port->late++; /* behind a gap given up on: delivering it now would break the order */
        message_free(m);
    } else {
        message **at = &port->held;
        while (*at && (*at)->seq < m->seq) at = &(*at)->next;
        if (*at && (*at)->seq == m->seq) { /* the same number twice: keep the newer */
            message *old = *at;
            m->next = old->next;
            message_free(old);
        } else {
            m->next = *at;
        }
        *at = m;
        release_held(port);
    }
}

bool port_receive(flujo_node *node, input_port *port, int flags) { return receive_message(node, port, flags) > 0; }

static bool receive_available(flujo_node *node, input_port *port) {
    bool got = false;
    while (port_receive(node, port, ZMQ_DONTWAIT)) got = true;
    return got;
}

/* A realtime port takes what has arrived, so its queue policy can drop. */
static void refresh(flujo_node *node, input_port *port) {
    if (port->policy != POLICY_BLOCK) receive_available(node, port);
}

/* While draining: nothing more can come on the port (every sender paused or ended, or, for a
 * zip, everything up to the agreed limit is in), and nothing is left in it. */
static bool quiet_and_empty(flujo_node *node, input_port *port) {
    if (!node->drain_requested) return false;
    hold *me = holds_find(node, node->name, node->replica);
    bool limited = me && me->has_limit;
    if (!quiet(port) && (!limited || !complete_through(port, me->limit))) return false;
    take_held(port);
    return port->ready.count == 0;
}

/* Waits for input on `sockets` (and commands). JOIN_STOP_READING when told to stop. */
static int wait_readable(flujo_node *node, void **sockets, int count) {
    for (int e = 0; e < node->nedges; e++) edge_flush(node, &node->edges[e]); /* what waits must go first */
    if (node->stop_requested || node->nobody_reads) return JOIN_STOP_READING;
    node_wait(node, sockets, count, ZMQ_POLLIN);
    return JOIN_ITEM;
}

/* Fills the port's ready queue with at least one message; JOIN_ITEM, or how the port ended. */
static int fill(flujo_node *node, input_port *port) {
    while (!port->ready.count) {
        if (senders_done(port)) return JOIN_ENDED;
        if (quiet_and_empty(node, port)) return JOIN_DRAINED;
        if (port->ready.count) continue; /* held items were taken */
        if (port_receive(node, port, ZMQ_DONTWAIT)) continue;
        int rc = wait_readable(node, &port->socket, 1);
        if (rc != JOIN_ITEM) return rc;
    }
    return JOIN_ITEM;
}

static int next_single(flujo_node *node, message **taken) {
    input_port *port = &node->ports[0];
    refresh(node, port);
    int rc = fill(node, port);
    if (rc == JOIN_ITEM) taken[0] = queue_pop(&port->ready);
    return rc;
}

/* zip: one call per sequence number present on every port (a zip waits only on the port it lacks). */
static int next_zip(flujo_node *node, message **taken) {
    for (int p = 0; p < node->nports; p++) refresh(node, &node->ports[p]);
    for (;;) {
        for (int p = 0; p < node->nports; p++) {
            int rc = fill(node, &node->ports[p]);
            if (rc != JOIN_ITEM) return rc; /* a zip ends when any input ends */
        }
        int64_t newest = INT64_MIN;
        for (int p = 0; p < node->nports; p++)
            if (node->ports[p].ready.head->seq > newest) newest = node->ports[p].ready.head->seq;
        bool aligned = true;
        for (int p = 0; p < node->nports; p++) {
            if (node->ports[p].ready.head->seq < newest) { /* only after a loss upstream: no partner */
                message_free(queue_pop(&node->ports[p].ready));
                aligned = false;
            }
        }
        if (!aligned) continue;
        for (int p = 0; p < node->nports; p++) taken[p] = queue_pop(&node->ports[p].ready);
        return JOIN_ITEM;
    }
}

/* merge: one call per item in arrival order, numbered anew; ends when every port has ended. */
static int next_merge(flujo_node *node, message **taken) {
    int count = node->nports;
    for (int p = 0; p < count; p++) refresh(node, &node->ports[p]);
    for (;;) {
        bool found = false;
        for (int offset = 0; offset < count && !found; offset++) {
            int p = (node->turn + offset) % count;
            input_port *port = &node->ports[p];
            if (!port->ready.count) continue;
            node->turn = (p + 1) % count;
            message *m = queue_pop(&port->ready);
            if (m->kind == KIND_SKIP) { /* the merged stream numbers its own items */
                message_free(m);
                found = true; /* look again from the next port */
                break;
            }
            m->seq = node->merge_seq++;
            taken[0] = m;
            node->event.port = port->name;
            return JOIN_ITEM;
        }
        if (found) continue;
        bool exhausted = true, drained = true, ready = false;
        void *sockets[64];
        int waiting = 0;
        for (int p = 0; p < count; p++) {
            input_port *port = &node->ports[p];
            bool done = senders_done(port) && !port->ready.count;
            exhausted &= done;
            if (!done && !quiet_and_empty(node, port)) drained = false;
            ready |= port->ready.count > 0;
        }
        if (exhausted) return JOIN_ENDED;
        if (drained) return JOIN_DRAINED;
        if (ready) continue;
        bool got = false;
        for (int p = 0; p < count; p++) /* every port: a busy port must not hide another's end */
            if (!senders_done(&node->ports[p])) got |= receive_available(node, &node->ports[p]);
        if (got) continue;
        for (int p = 0; p < count && waiting < 64; p++)
            if (!senders_done(&node->ports[p])) sockets[waiting++] = node->ports[p].socket;
        int rc = wait_readable(node, sockets, waiting);
        if (rc != JOIN_ITEM) return rc;
    }
}

int join_next(flujo_node *node, message **taken) {
    if (node->nports == 1) {
        node->event.port = node->ports[0].name;
        return next_single(node, taken);
    }
    if (node->zip) {
        node->event.port = NULL;
        return next_zip(node, taken);
    }
    return next_merge(node, taken);
}
