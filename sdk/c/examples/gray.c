/* Grayscale and brightness statistics of BGR frames, as OpenCV's cvtColor(BGR2GRAY) computes them.
 *
 * Input: a frame item (a map whose "frame" is an HxWx3 "|u1" array, as flujo.nodes.video's
 * VideoReader sends), read in place. Output on "out": the same map with "frame" replaced by
 * the HxW gray image (sent without a copy) and "gray_mean", "gray_min", "gray_max" added.
 * With args { frame = false } the gray image is left out: statistics only. */
#include <stdlib.h>
#include <string.h>

#include <flujo_node.h>

/* OpenCV's fixed-point BT.601 weights (B 3735, G 19235, R 9798, over 2^15, rounded), per byte value */
static struct {
    uint32_t b[256], g[256], r[256];
} weights;

static void init_weights(void) {
    for (uint32_t v = 0; v < 256; v++) {
        weights.b[v] = v * 3735u;
        weights.g[v] = v * 19235u;
        weights.r[v] = v * 9798u + (1u << 14);
    }
}

static void release(void *data, void *hint) {
    (void)hint;
    free(data);
}

static void pack_key(msgpack_packer *packer, const char *key) {
    msgpack_pack_str(packer, strlen(key));
    msgpack_pack_str_body(packer, key, strlen(key));
}

static int convert(flujo_node *node, const flujo_event *event, bool keep_frame) {
    const msgpack_object *item = &event->values[0], *frame = flujo_map_get(item, "frame");
    flujo_array bgr;
    if (!frame || !flujo_event_array(event, frame, &bgr) || bgr.ndim != 3 || bgr.shape[2] != 3 ||
        strcmp(bgr.dtype, "|u1") != 0) {
        flujo_fail(node, "item %lld: expected a map with \"frame\": an HxWx3 |u1 (BGR) array", (long long)event->seq);
        return -1;
    }
    size_t pixels = (size_t)(bgr.shape[0] * bgr.shape[1]);
    const uint8_t *in = bgr.data;
    uint8_t *gray = malloc(pixels ? pixels : 1);
    uint64_t histogram[256] = {0}, sum = 0;
    for (size_t i = 0; i < pixels; i++, in += 3) {
        uint8_t y = (uint8_t)((weights.b[in[0]] + weights.g[in[1]] + weights.r[in[2]]) >> 15);
        gray[i] = y;
        histogram[y]++; /* mean, min and max from the histogram: no branch per pixel */
    }
    int low = 0, high = 255;
    while (low < 255 && !histogram[low]) low++;
    while (high > 0 && !histogram[high]) high--;
    for (int v = 0; v < 256; v++) sum += (uint64_t)v * histogram[v];
    flujo_item *out = flujo_item_new();
    msgpack_packer *packer = flujo_item_packer(out);
    msgpack_pack_map(packer, item->via.map.size + 3 - (keep_frame ? 0 : 1));
    for (uint32_t i = 0; i < item->via.map.size; i++) {
        const msgpack_object_kv *kv = &item->via.map.ptr[i];
        if (&kv->val == frame) {
            if (!keep_frame) continue;
            int64_t shape[2] = {bgr.shape[0], bgr.shape[1]};
            msgpack_pack_object(packer, kv->key);
            flujo_item_pack_array(out, gray, pixels, "|u1", 2, shape, release, NULL); /* no copy */
            gray = NULL;
        } else {
            msgpack_pack_object(packer, kv->key);
            flujo_item_pack_received(out, event, &kv->val);
        }
    }
    free(gray);
    pack_key(packer, "gray_mean"), msgpack_pack_double(packer, pixels ? (double)sum / (double)pixels : 0.0);
    pack_key(packer, "gray_min"), msgpack_pack_int(packer, pixels ? low : 0);
    pack_key(packer, "gray_max"), msgpack_pack_int(packer, high);
    return flujo_send(node, "out", out);
}

int main(void) {
    flujo_node *node = flujo_init();
    if (!node) return 1;
    bool keep_frame = flujo_arg_number(node, "frame", 1) != 0;
    init_weights();
    const flujo_event *event;
    while ((event = flujo_next(node))->type == FLUJO_INPUT)
        if (convert(node, event, keep_frame) != 0 && *flujo_error(node)) flujo_fail(node, "%s", flujo_error(node));
    return flujo_close(node);
}
