/* A producer counting 0, 1, 2, ... up to args.n (forever when 0), args.pause seconds apart. */
#include <time.h>

#include <flujo_node.h>

int main(void) {
    flujo_node *node = flujo_init();
    if (!node) return 1;
    long long n = (long long)flujo_arg_number(node, "n", 0), next = 0;
    double pause = flujo_arg_number(node, "pause", 0);
    struct timespec nap = {(time_t)pause, (long)((pause - (double)(time_t)pause) * 1e9)};
    const flujo_event *event;
    while ((event = flujo_next(node))->type == FLUJO_PRODUCE && (n == 0 || next < n)) {
        flujo_item *item = flujo_item_new();
        msgpack_pack_long_long(flujo_item_packer(item), next++);
        if (flujo_send(node, "out", item) != 0) flujo_fail(node, "%s", flujo_error(node));
        if (pause > 0) nanosleep(&nap, NULL);
    }
    return flujo_close(node);
}
