/* Internals shared by the library's files (not part of the API). */
#ifndef FLUJO_INTERNAL_H
#define FLUJO_INTERNAL_H

#include <pthread.h>
#include <zmq.h>

#include "flujo_node.h"
#include "json.h"

#define PROTOCOL_VERSION 1
#define ARRAY_EXT 1
#define POLL_INTERVAL_MS 500      /* upper bound on a blocking wait; every wait also wakes on control */
#define STATS_INTERVAL 0.5        /* seconds between two stats reports */
#define CONTROL_INTERVAL 0.002    /* a busy node looks at its commands this often */
#define HOLD_BACK_BYTES (256u << 20) /* a paused zip reader's items kept in memory at most */
#define END_SEQ INT64_MAX         /* the sequence number end of stream counts as: past any limit */
#define BATCH_ITEMS 16            /* a batch of small items for a busy reader: at most this many, */
#define BATCH_BYTES (16 * 1024)   /* this many bytes, */
#define BATCH_WAIT 0.005          /* or this many seconds */

enum { KIND_DATA = 0, KIND_SKIP = 1, KIND_EOS = 2, KIND_BATCH = 3, KIND_PAUSE = 4 };
enum { POLICY_BLOCK = 0, POLICY_DROP_NEWEST = 1, POLICY_DROP_OLDEST = 2 };
enum { ROLE_PRODUCER, ROLE_PROCESSOR, ROLE_CONSUMER };
enum { JOIN_ENDED = 0, JOIN_ITEM = 1, JOIN_STOP_READING = -1, JOIN_DRAINED = -2 };

/* An array found in a received body: where its ext object is, and what it refers to. */
typedef struct array_ref {
    const msgpack_object *object;
    zmq_msg_t *frame;
    flujo_array array;
} array_ref;

/* A received item (DATA, or one item of a BATCH) or SKIP, decoded once on arrival. */
typedef struct message {
    int kind;
    int64_t seq;
    int replica;
    int nframes;          /* frames[0] is the body, then the array frames */
    zmq_msg_t *frames;
    msgpack_zone *zone;   /* holds `item` */
    msgpack_object item;
    int narrays;
    array_ref *arrays;
    struct message *next;
} message;

typedef struct queue {
    message *head, *tail;
    size_t count;
} queue;

typedef struct input_port {
    const char *name, *source;
    int hwm, senders, policy;
    void *socket;
    bool reorder;           /* several senders: restore sequence order */
    int64_t expected;       /* next sequence number to deliver when reordering */
    message *held;          /* arrived early, sorted by seq: waiting for the gap before them */
    int64_t *last_seen;     /* per sender replica: the highest sequence number from it */
    bool *ended, *paused;   /* per sender replica */
    int nended;
    bool released;          /* reported "released" */
    uint64_t late, dropped, received;
    queue ready;            /* in order, for the join */
} input_port;

/* An outgoing message: header, body, array frames (zmq messages, copied by reference). */
typedef struct outgoing {
    int nframes;
    zmq_msg_t *frames;
    size_t bytes;
    int items;               /* what it counts for in the "sent" stats: DATA and SKIP 1, BATCH n */
    struct outgoing *next;
} outgoing;

typedef struct output_edge {
    const char *port, *target, *target_port;
    char *label;             /* "target/target_port", the stats key */
    int hwm, policy;
    bool aligned;
    int n;                   /* downstream replicas */
    void **sockets;
    bool *released;
    int64_t *paused;         /* per replica: generation its PAUSE was sent for, or -1 */
    int64_t *reported;       /* per replica: generation its position was reported for, or -1 */
    int64_t *position;       /* per replica: the position reported */
    int next;                /* round-robin start */
    int64_t last_seq;        /* the highest sequence number handed to the single reader */
    outgoing *held_back, *held_back_tail; /* kept for a held zip reader's successor */
    size_t held_back_bytes;
    bool sending;            /* inside a send to this edge: a wait must not slip a PAUSE in */
    msgpack_sbuffer batch;   /* bodies of small items waiting while the single reader is busy */
    int batched;             /* how many; numbered batch_seq, batch_seq + 1, ... */
    int64_t batch_seq;
    double batch_since;
    int64_t answered;        /* sequence number of the last result sent here */
    uint64_t sent, dropped;
} output_edge;

typedef struct hold {
    char *node;
    int replica;
    int64_t generation;
    bool has_limit, drained;
    int64_t limit;
} hold;

struct flujo_node {
    json_value *config;
    const char *flow, *name;
    int replica, role;
    int64_t generation;
    bool zip, skip_errors, restart_policy;
    void *context, *commands, *reporter;
    input_port *ports;
    int nports;
    output_edge *edges;
    int nedges;
    hold *holds;             /* graceful restarts in progress; nholds 0 almost always */
    int nholds;
    hold *resumed;           /* per replica ever resumed: the highest generation (in `generation`) */
    int nresumed;
    bool ready_sent, started, stop_requested, drain_requested, dismissed, nobody_reads;
    uint64_t items_in, items_out, errors, refused;
    double busy;
    int64_t next_seq, merge_seq;
    int turn;
    double next_report, next_control;
    /* the current event */
    flujo_event event;
    message **event_messages;  /* one per value */
    msgpack_object *values;
    const char **value_ports;
    bool in_event, answered, stopped;
    double event_since;
    /* security (section 11): the flow key, a ZAP handler thread when a tcp input is bound */
    bool secure, zap_running;
    char curve_public[41], curve_secret[41];
    uint8_t curve_public_key[32];
    void *zap;
    pthread_t zap_thread;
    /* failure */
    bool failed, item_failed;
    char *failure;
    char error[256];
};

/* node.c */
double flujo_clock(void);
void node_wait(flujo_node *node, void **sockets, int count, short events);
void node_report(flujo_node *node, const char *kind, const msgpack_sbuffer *payload);
void node_log(flujo_node *node, const char *format, ...) __attribute__((format(printf, 2, 3)));
hold *holds_find(flujo_node *node, const char *target, int replica);
void report_position(flujo_node *node, output_edge *edge, int index, int64_t seq);

/* control.c */
void pack_stats(flujo_node *node, msgpack_packer *packer);
void report_stats(flujo_node *node, const char *kind);
void report_error(flujo_node *node);
void release_all_ports(flujo_node *node);
void apply_control(flujo_node *node);
bool control_pending(flujo_node *node);

/* security.c */
int security_load(flujo_node *node);
int security_before_bind(flujo_node *node, void *socket, const char *endpoint);
void security_before_connect(flujo_node *node, void *socket, const char *endpoint);
void security_close(flujo_node *node);

/* wire.c */
void pack_string(msgpack_packer *packer, const char *text);
void pack_header(msgpack_sbuffer *buffer, int kind, int64_t seq, const char *node, int replica);
outgoing *outgoing_marker(flujo_node *node, int kind, int64_t seq);
outgoing *outgoing_copy(const outgoing *source);
void outgoing_free(outgoing *out);
int outgoing_send(void *socket, outgoing *out, int flags);
int receive_message(flujo_node *node, input_port *port, int flags);
void message_free(message *m);
void queue_push(queue *q, message *m);
message *queue_pop(queue *q);
outgoing *item_to_outgoing(flujo_node *node, flujo_item *item, int64_t seq);
bool item_is_broken(const flujo_item *item);

/* inputs.c */
int port_open(flujo_node *node, input_port *port, const json_value *config);
void port_close(input_port *port);
void port_accept(flujo_node *node, input_port *port, message *m);
void port_sender_ended(flujo_node *node, input_port *port, int replica);
void port_pause(flujo_node *node, input_port *port, int replica, const char *sender);
bool port_receive(flujo_node *node, input_port *port, int flags);
int join_next(flujo_node *node, message **taken);

/* outputs.c */
int edge_open(flujo_node *node, output_edge *edge, const json_value *config);
void edge_close(output_edge *edge, int linger_ms);
bool edge_deal(flujo_node *node, output_edge *edge, const outgoing *out, int64_t seq);
void edge_pause_held(flujo_node *node, output_edge *edge);
int edge_pause_all(flujo_node *node, output_edge *edge, int *readers);
void edge_broadcast(flujo_node *node, output_edge *edge, const outgoing *out);
bool edge_all_released(const output_edge *edge);
void edge_flush(flujo_node *node, output_edge *edge);
void edge_flush_stale(flujo_node *node, output_edge *edge, double now);

#endif
