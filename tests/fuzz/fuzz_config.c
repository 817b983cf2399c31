/* libFuzzer: the configuration loader (libyaml + the schema), on a file written
 * from the input. What loads is also packed for its workers and unpacked again,
 * and must come back equal. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "config/config.h"

static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	snprintf(path, sizeof path, "/tmp/ucgw-fuzz-config-%d.yaml", (int)getpid());
	log_init("fuzz_config", LOG_LVL_ERR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		abort();
	if (size && fwrite(data, 1, size, f) != size)
		abort();
	fclose(f);
	struct config *cfg = NULL;
	char err[1024];
	if (config_load(path, &cfg, err, sizeof err) < 0)
		return 0;
	for (size_t i = 0; i < cfg_schema_len; i++) {
		const struct cfg_section *s = &cfg->sections[i];
		if (!s->packed)
			continue;
		struct cfg_section back;
		if (cfg_section_unpack(s->schema->name, s->packed, s->packed_len, &back, err, sizeof err) < 0 ||
		    !cfg_section_equal(s, &back))
			abort();
		cfg_section_free(&back);
	}
	config_free(cfg);
	return 0;
}
