/* The dashboard page's files, built into ucgwd at build time (embed.cmake turns
 * each file of supervisor/dashboard/ into bytes of a generated C file), so the
 * page works on a device that has no internet. */
#ifndef UCGW_DASHBOARD_ASSETS_H
#define UCGW_DASHBOARD_ASSETS_H

#include <stddef.h>

struct dashboard_asset {
	const char *path; /* "/index.html" */
	const char *type; /* Content-Type */
	const unsigned char *data;
	size_t len;
};

extern const struct dashboard_asset dashboard_assets[];
extern const size_t dashboard_assets_len;

#endif
