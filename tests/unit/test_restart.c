/* The restart policy with a hand-driven clock. */
#include "check.h"
#include "common/util.h"
#include "supervisor/restart.h"

static const struct restart_policy pol = { .backoff_min_ms = 100, .backoff_max_ms = 30000,
					   .reset_after_ms = 60000, .window_ms = 60000, .max_deaths = 5 };

static void test_backoff_doubles_with_jitter(void)
{
	struct restart_state st;
	restart_reset(&st);
	struct restart_policy p = pol;
	p.max_deaths = 100;
	uint64_t now = 1000000, base = 100;
	for (int i = 0; i < 12; i++) {
		struct restart_decision d = restart_on_exit(&st, &p, now, 10, -1, (uint64_t)i * 7919);
		CHECK(d.action == RESTART_AFTER);
		CHECK(d.delay_ms >= base * 3 / 4 && d.delay_ms <= base * 5 / 4 + 1);
		base = base * 2 > 30000 ? 30000 : base * 2;
		now += 61000; /* outside the death window, but each run was short */
	}
	CHECK(st.backoff_ms == 30000);
}

static void test_reset_after_good_run(void)
{
	struct restart_state st;
	restart_reset(&st);
	uint64_t now = 1000000;
	restart_on_exit(&st, &pol, now, 10, -1, 0);
	restart_on_exit(&st, &pol, now + 100000, 10, -1, 0);
	CHECK(st.backoff_ms == 400);
	struct restart_decision d = restart_on_exit(&st, &pol, now + 300000, 61000, -1, 0);
	CHECK(d.action == RESTART_AFTER && d.delay_ms <= 125);
}

static void test_failed_after_n_in_t(void)
{
	struct restart_state st;
	restart_reset(&st);
	uint64_t now = 5000000;
	for (int i = 0; i < 4; i++)
		CHECK(restart_on_exit(&st, &pol, now + (uint64_t)i * 1000, 10, 1, 0).action == RESTART_AFTER);
	struct restart_decision d = restart_on_exit(&st, &pol, now + 5000, 10, 1, 0);
	CHECK(d.action == RESTART_FAILED && d.recent == 5);
	/* The same five deaths spread over more than T do not fail it. */
	restart_reset(&st);
	for (int i = 0; i < 10; i++)
		CHECK(restart_on_exit(&st, &pol, now + (uint64_t)i * 20000, 10, 1, 0).action == RESTART_AFTER);
}

static void test_bad_config_never_restarts(void)
{
	struct restart_state st;
	restart_reset(&st);
	CHECK(restart_on_exit(&st, &pol, 1000, 5, UCGW_EXIT_CONFIG, 0).action == RESTART_BAD_CONFIG);
	CHECK(restart_on_exit(&st, &pol, 2000, 5, 1, 0).action == RESTART_AFTER);
}

int main(void)
{
	test_backoff_doubles_with_jitter();
	test_reset_after_good_run();
	test_failed_after_n_in_t();
	test_bad_config_never_restarts();
	return CHECK_DONE();
}
