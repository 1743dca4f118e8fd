/* CurveZMQ on every tcp socket of a secure flow (docs/PROTOCOL.md, section 11).
 *
 * The launcher hands every node the flow's key pair ("curve": {"public", "secret"}, Z85). A
 * socket that binds a tcp endpoint is a CURVE server, and a ZAP handler in this process
 * admits only clients presenting the flow's public key; a socket that connects is a CURVE
 * client expecting the flow key from the server. ipc endpoints are left alone. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"

static bool is_tcp(const char *endpoint) { return strncmp(endpoint, "tcp://", 6) == 0; }

int security_load(flujo_node *node) {
    const json_value *curve = json_get(node->config, "curve");
    if (!curve || curve->type == JSON_NULL) return 0;
    const char *public = json_string(curve, "public", ""), *secret = json_string(curve, "secret", "");
    uint8_t key[32];
    if (strlen(public) != 40 || strlen(secret) != 40 || !zmq_z85_decode(node->curve_public_key, public) ||
        !zmq_z85_decode(key, secret)) {
        snprintf(node->error, sizeof node->error, "\"curve\" needs a public and a secret key, 40 characters of Z85");
        return -1;
    }
    if (!zmq_has("curve")) {
        snprintf(node->error, sizeof node->error, "the flow is secure (CURVE) but this libzmq has no CURVE support");
        return -1;
    }
    memcpy(node->curve_public, public, 41);
    memcpy(node->curve_secret, secret, 41);
    node->secure = true;
    return 0;
}

/* ZAP (RFC 27): admit a CURVE client presenting the flow's public key, and nothing else over tcp. */
static void *zap_handler(void *argument) {
    flujo_node *node = argument;
    void *socket = node->zap;
    for (;;) {
        zmq_msg_t parts[7];
        int count = 0;
        bool more = true;
        while (more) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, socket, 0) < 0) { /* ETERM: the node is closing */
                zmq_msg_close(&part);
                for (int i = 0; i < count; i++) zmq_msg_close(&parts[i]);
                zmq_close(socket);
                return NULL;
            }
            more = zmq_msg_more(&part);
            if (count < 7) {
                zmq_msg_init(&parts[count]);
                zmq_msg_move(&parts[count++], &part);
            }
            zmq_msg_close(&part);
        }
        /* version, request id, domain, address, identity, mechanism, credentials... */
        bool admitted = false;
        if (count >= 6) {
            size_t mechanism = zmq_msg_size(&parts[5]);
            if (mechanism == 5 && memcmp(zmq_msg_data(&parts[5]), "CURVE", 5) == 0)
                admitted = count >= 7 && zmq_msg_size(&parts[6]) == 32 &&
                           memcmp(zmq_msg_data(&parts[6]), node->curve_public_key, 32) == 0;
        }
        const char *status = admitted ? "200" : "400", *text = admitted ? "OK" : "not a member of this flow";
        zmq_send(socket, "1.0", 3, ZMQ_SNDMORE);
        if (count >= 2) zmq_send(socket, zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), ZMQ_SNDMORE);
        else zmq_send(socket, "", 0, ZMQ_SNDMORE);
        zmq_send(socket, status, 3, ZMQ_SNDMORE);
        zmq_send(socket, text, strlen(text), ZMQ_SNDMORE);
        zmq_send(socket, "", 0, ZMQ_SNDMORE); /* user id */
        zmq_send(socket, "", 0, 0);           /* metadata */
        for (int i = 0; i < count; i++) zmq_msg_close(&parts[i]);
    }
}

int security_before_bind(flujo_node *node, void *socket, const char *endpoint) {
    if (!node->secure || !is_tcp(endpoint)) return 0;
    if (!node->zap) { /* the handler runs in a thread of its own: handshakes need no help from the node */
        node->zap = zmq_socket(node->context, ZMQ_REP);
        if (zmq_bind(node->zap, ZAP_ENDPOINT) != 0 || pthread_create(&node->zap_thread, NULL, zap_handler, node) != 0) {
            snprintf(node->error, sizeof node->error, "cannot start the ZAP handler for CURVE");
            zmq_close(node->zap);
            node->zap = NULL;
            return -1;
        }
        node->zap_running = true;
    }
    int server = 1;
    zmq_setsockopt(socket, ZMQ_CURVE_SERVER, &server, sizeof server);
    zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, node->curve_secret, 40);
    zmq_setsockopt(socket, ZMQ_ZAP_DOMAIN, "flujo", 5);
    return 0;
}

void security_before_connect(flujo_node *node, void *socket, const char *endpoint) {
    if (!node->secure || !is_tcp(endpoint)) return;
    zmq_setsockopt(socket, ZMQ_CURVE_SERVERKEY, node->curve_public, 40);
    zmq_setsockopt(socket, ZMQ_CURVE_PUBLICKEY, node->curve_public, 40);
    zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, node->curve_secret, 40);
}

void security_close(flujo_node *node) {
    if (node->zap_running) pthread_join(node->zap_thread, NULL); /* after zmq_ctx_term began: ETERM ends it */
}
