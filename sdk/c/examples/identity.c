/* A processor that passes every item through unchanged (arrays zero-copy). */
#include <flujo_node.h>

int main(void) {
    flujo_node *node = flujo_init();
    if (!node) return 1;
    const flujo_event *event;
    while ((event = flujo_next(node))->type == FLUJO_INPUT)
        for (int i = 0; i < event->count; i++) /* a zip of several ports sends its first value */
            if (i == 0 && flujo_forward(node, "out", event, i) != 0) flujo_fail(node, "%s", flujo_error(node));
    return flujo_close(node);
}
