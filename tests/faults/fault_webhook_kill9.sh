#!/usr/bin/env bash
# fault_webhook_kill9.sh - SIGKILL of `serve` after a verdict is committed and before its
# webhook is delivered: the delivery is not lost.
#
# The outbox row is written by a trigger in the same transaction as the final status, so
# a process killed between the two never leaves a verdict without its delivery. The
# scenario: an event whose webhook receiver is down; a submission uploaded through the
# API is judged `validated`, the first delivery attempt fails, `serve` is killed with
# SIGKILL; the receiver comes back and a new `serve` delivers the webhook, whose
# Standard Webhooks signature the receiver checks. The receiver, the upload and the
# checks are those of tests/integration/test_api.c ("kill -9 between verdict and
# delivery"), run here on this scenario's own Postgres cluster with the real binaries.
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
ft_init

TEST_BIN=$EV_BUILD_DIR/tests/test_api
[ -x "$TEST_BIN" ] || ft_fatal "$TEST_BIN not built"
ft_pg_start
ft_log "running test_api 'kill -9 between verdict and delivery'"
if "$TEST_BIN" "kill -9 between verdict and delivery" >"$FT_DIR/test_api.log" 2>&1; then
    ft_pass "webhook delivered and verified after kill -9 between verdict and delivery"
else
    tail -n 40 "$FT_DIR/test_api.log"
    ft_fail "webhook delivered and verified after kill -9 between verdict and delivery"
fi
