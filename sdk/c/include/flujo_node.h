/*
 * flujo_node.h: write a Flujo node in C.
 *
 * A node is a program the launcher starts with its configuration in the environment
 * (FLUJO_NODE_CONFIG). It asks for events one at a time and answers each input item with
 * at most one result per output port:
 *
 *     flujo_node *node = flujo_init();
 *     if (!node) return 1;
 *     const flujo_event *event;
 *     while ((event = flujo_next(node))->type == FLUJO_INPUT)
 *         flujo_forward(node, "out", event, 0);     // a processor passing items through
 *     return flujo_close(node);                     // end of stream, hand-over or failure
 *
 * The library speaks the whole wire protocol (docs/PROTOCOL.md): the handshake, sequence
 * numbers (an input answered with nothing sends SKIP downstream), order restoring behind
 * replicated senders, zip and merge joins, end of stream, stop, released/gone, stats, errors,
 * restarts after a crash and graceful restarts (hold, align, PAUSE, resume, dismiss).
 *
 * Items are msgpack objects (msgpack-c). Arrays travel as separate frames and are seen in
 * place: flujo_event_array() gives a pointer into the received message, valid until the
 * next flujo_next(); flujo_item_pack_array() sends a buffer without copying it.
 */
#ifndef FLUJO_NODE_H
#define FLUJO_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FLUJO_MAX_DIMS 8

typedef struct flujo_node flujo_node;
typedef struct flujo_item flujo_item;

typedef enum {
    FLUJO_INPUT = 1,   /* an item (zip: one value per port) arrived: answer it with flujo_send */
    FLUJO_PRODUCE = 2, /* producers: produce the item numbered `seq` now (or send nothing) */
    FLUJO_STOP = 3,    /* no more events: call flujo_close() */
} flujo_event_type;

typedef enum {
    FLUJO_STOP_NONE = 0,
    FLUJO_STOP_ENDED = 1,      /* every input ended (a zip: one of them ran dry) */
    FLUJO_STOP_COMMAND = 2,    /* the launcher said stop (flujo-launch stop, Ctrl-C) */
    FLUJO_STOP_NO_READERS = 3, /* nobody downstream reads any more */
    FLUJO_STOP_HANDOVER = 4,   /* graceful restart: a successor continues this stream */
    FLUJO_STOP_FAILED = 5,     /* flujo_fail() was called (on_error = "fail") */
} flujo_stop_cause;

typedef struct flujo_event {
    flujo_event_type type;
    flujo_stop_cause cause;        /* FLUJO_STOP only */
    int64_t seq;                   /* the item's sequence number */
    const char *port;              /* the input port, or NULL for a zip of several ports */
    int count;                     /* values: 1, or one per input port for a zip */
    const char *const *ports;      /* the port of each value */
    const msgpack_object *values;  /* the items, valid until the next flujo_next() */
    flujo_node *owner;             /* private: the node the event belongs to */
} flujo_event;

/* A received or outgoing numpy-style array: C order, `dtype` is numpy's type string. */
typedef struct flujo_array {
    const void *data;  /* received: points into the message, read-only */
    size_t nbytes;
    char dtype[16];    /* "|u1", "<f4", "<i8", ... */
    size_t itemsize;
    int ndim;
    int64_t shape[FLUJO_MAX_DIMS];
} flujo_array;

/* -- life cycle ------------------------------------------------------------------------- */

/* Reads FLUJO_NODE_CONFIG, binds the inputs, connects outputs and control. NULL on failure
 * (the reason is printed on stderr). Setup done between flujo_init() and the first
 * flujo_next() counts as the node's open(): the launcher hears "ready" only then. */
flujo_node *flujo_init(void);

/* The next event. The previous event (and every pointer into it) is invalid from here on.
 * An input left unanswered sends SKIP downstream for its sequence number. Never NULL. */
const flujo_event *flujo_next(flujo_node *node);

/* Ends the node as the protocol says (end of stream and wait for the readers; or hand over
 * to a successor; or, after a failure under a restart policy, no end of stream), frees it
 * and returns the process exit status: 0, or 1 after flujo_fail(). */
int flujo_close(flujo_node *node);

/* User code failed on the current item. With on_error = "skip" the item is counted and
 * skipped (SKIP downstream); otherwise the node reports the error and the next event is
 * FLUJO_STOP with FLUJO_STOP_FAILED. */
void flujo_fail(flujo_node *node, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* -- configuration ---------------------------------------------------------------------- */

const char *flujo_node_name(const flujo_node *node);
int flujo_replica(const flujo_node *node);
/* The manifest's `args` table: a string / number (or boolean: 1, 0) argument, or the fallback. */
const char *flujo_arg_string(const flujo_node *node, const char *name, const char *fallback);
double flujo_arg_number(const flujo_node *node, const char *name, double fallback);

/* -- reading items ------------------------------------------------------------------------ */

/* When `object` (a value of the event, or inside one) is an array, fills `array` and
 * returns true. The data is the received frame itself, valid until the next flujo_next(). */
bool flujo_event_array(const flujo_event *event, const msgpack_object *object, flujo_array *array);

/* The value under a string key of a msgpack map, or NULL. */
const msgpack_object *flujo_map_get(const msgpack_object *map, const char *key);

/* -- sending items ------------------------------------------------------------------------- */

/* An item to send: pack it with msgpack-c on flujo_item_packer(), arrays with the calls below. */
flujo_item *flujo_item_new(void);
msgpack_packer *flujo_item_packer(flujo_item *item);
void flujo_item_free(flujo_item *item);

/* Packs an array referring to `data` without copying it: `release(data, hint)` is called
 * once nobody needs the bytes any more (possibly after the item was sent). With `release`
 * NULL the bytes are copied now. Returns 0, or -1 on bad arguments. */
int flujo_item_pack_array(flujo_item *item, const void *data, size_t nbytes, const char *dtype, int ndim,
                          const int64_t *shape, void (*release)(void *data, void *hint), void *hint);

/* Packs a value received in `event` (maps, lists, arrays and all); its arrays are sent from
 * the received frames, shared, not copied. Returns 0, or -1. */
int flujo_item_pack_received(flujo_item *item, const flujo_event *event, const msgpack_object *object);

/* Sends the item as this node's result on `port` ("out" unless the node has several) for
 * the current event, to every downstream node reading that port; takes the item (it is
 * freed, sent or not). One result per port per event. Returns 0, or -1 (flujo_error()). */
int flujo_send(flujo_node *node, const char *port, flujo_item *item);

/* Sends value `index` of the event unchanged on `port`: zero-copy for arrays. */
int flujo_forward(flujo_node *node, const char *port, const flujo_event *event, int index);

/* The last error of flujo_send and friends. */
const char *flujo_error(const flujo_node *node);

#ifdef __cplusplus
}
#endif
#endif
