/*
 * Non-destructive queue walker for dumps: follows each queue from its head
 * through the LINK fields and reports the chain, changing no event word.
 * Walks are bounded by the owner map (a port is visited at most once per
 * dump), so cycles and chains shared between queues end with a status.
 */
#include "fifo_internal.h"

/* owner[] has nr_pages * 1024 entries: 0 = not seen, else queue_id + 1. */
int xe_walk_queue(const xe_domain *d, uint32_t queue_id, uint32_t head, uint32_t *chain,
                  uint32_t chain_len, uint16_t *owner, xe_walk_result *res)
{
    uint32_t port = head, *word, w, n = 0;
    const uint16_t me = (uint16_t)(queue_id + 1);

    res->head = head;
    res->count = 0;
    res->bad_port = 0;
    res->other = -1;
    if (d->nr_pages > XE_MAX_PAGES)
        return XE_E_STATE;
    if (head == 0) {
        res->status = XE_WALK_EMPTY;
        return XE_OK;
    }
    word = xe_word(d, head);
    if (word == NULL) {
        res->status = XE_WALK_RANGE;
        res->bad_port = head;
        return XE_OK;
    }
    if (!(xe_load(word) & XE_W_LINKED)) {
        res->status = XE_WALK_STALE;
        res->bad_port = head;
        return XE_OK;
    }
    for (;;) {
        if (owner[port] == me) {
            res->status = XE_WALK_CYCLE;
            res->bad_port = port;
            break;
        }
        if (owner[port] != 0) {
            res->status = XE_WALK_SHARED;
            res->bad_port = port;
            res->other = owner[port] - 1;
            break;
        }
        if (n >= chain_len) {
            res->status = XE_WALK_TRUNCATED;
            res->bad_port = port;
            break;
        }
        owner[port] = me;
        chain[n++] = port;
        w = xe_load(word);
        port = w & XE_EVTCHN_FIFO_LINK_MASK;
        if (port == 0) {
            res->status = XE_WALK_END;
            break;
        }
        word = xe_word(d, port);
        if (word == NULL) {
            res->status = XE_WALK_RANGE;
            res->bad_port = port;
            break;
        }
        if (!(xe_load(word) & XE_W_LINKED)) {
            res->status = XE_WALK_UNLINKED;
            res->bad_port = port;
            break;
        }
    }
    res->count = n;
    return XE_OK;
}

/* Walk all 16 queues of every vCPU.  starts[vcpu * 16 + prio] overrides the
 * control block's head (the guest's local head, mid-consume); NULL uses the
 * control blocks.  results[] has nr_vcpus * 16 entries; chains are packed
 * into chain[] in queue order.  owner[] must be zeroed by the caller. */
int xe_walk_all(const xe_domain *d, const uint32_t *starts, uint32_t *chain, uint32_t chain_len,
                uint16_t *owner, xe_walk_result *results)
{
    uint32_t v, p, id, used = 0, head;
    xe_walk_result *r;
    int rc;

    if (d->nr_pages > XE_MAX_PAGES || owner == NULL)
        return XE_E_STATE;
    /* owner[] holds queue_id + 1 in 16 bits */
    if (d->nr_vcpus >= 0xffffu / XE_EVTCHN_FIFO_MAX_QUEUES)
        return XE_E_VCPU;
    for (v = 0; v < d->nr_vcpus; v++) {
        const xe_control_block *cb = d->cb ? d->cb[v] : NULL;

        for (p = 0; p < XE_EVTCHN_FIFO_MAX_QUEUES; p++) {
            id = v * XE_EVTCHN_FIFO_MAX_QUEUES + p;
            r = &results[id];
            r->start = used;
            if (cb == NULL) {
                r->head = starts ? starts[id] : 0;
                r->count = 0;
                r->status = XE_WALK_NO_CONTROL;
                r->bad_port = 0;
                r->other = -1;
                continue;
            }
            head = (starts && starts[id]) ? starts[id] : xe_load(&cb->head[p]);
            rc = xe_walk_queue(d, id, head, chain + used, chain_len - used, owner, r);
            if (rc < 0)
                return rc;
            r->start = used;
            used += r->count;
        }
    }
    return (int)used;
}
