/* A processor that passes every item through unchanged (arrays zero-copy).
 * With args { fail_on = "TEXT" }, an item equal to that string fails as user code would
 * (the conformance kit sends "flujo-conformance:fail"). */
#include <string.h>

#include <flujo_node.h>

static bool is_text(const msgpack_object *o, const char *text) {
    return text && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(text) &&
           memcmp(o->via.str.ptr, text, o->via.str.size) == 0;
}

int main(void) {
    flujo_node *node = flujo_init();
    if (!node) return 1;
    const char *fail_on = flujo_arg_string(node, "fail_on", NULL);
    const flujo_event *event;
    while ((event = flujo_next(node))->type == FLUJO_INPUT) {
        if (is_text(&event->values[0], fail_on))
            flujo_fail(node, "cannot handle item %lld", (long long)event->seq);
        else if (flujo_forward(node, "out", event, 0) != 0) /* a zip of several ports: the first value */
            flujo_fail(node, "%s", flujo_error(node));
    }
    return flujo_close(node);
}
