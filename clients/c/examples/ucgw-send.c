/* ucgw-send: hand metadata and files to ucgwd with libucgw.
 *
 *   cc ucgw-send.c -o ucgw-send $(pkg-config --cflags --libs ucgw)
 *   ./ucgw-send '{"plate":"ABC123"}'            # accepted: on ucgwd's disk
 *   ./ucgw-send --wait '{"plate":"ABC123"}'     # delivered: the server acknowledged it
 *   ./ucgw-send --file plate-0001.jpg
 *
 * $UCGW_SOCKET names another socket than /run/ucgw/control.sock. Exit status:
 * 0 sent, 1 refused or not delivered, 2 usage. */
#include <stdio.h>
#include <string.h>

#include <ucgw.h>

int main(int argc, char **argv)
{
	struct ucgw_send_opts opts = { .priority = "normal", .timeout_ms = 30000 };
	const char *file = NULL, *data = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0)
			opts.wait = true;
		else if (strcmp(argv[i], "--file") == 0 && i + 1 < argc)
			file = argv[++i];
		else if (strcmp(argv[i], "--protocol") == 0 && i + 1 < argc)
			opts.protocol = argv[++i];
		else
			data = argv[i];
	}
	if (!file == !data) {
		fprintf(stderr, "usage: ucgw-send [--wait] [--protocol NAME] JSON | --file PATH\n");
		return 2;
	}
	int err;
	ucgw_t *gw = ucgw_open(NULL, NULL, &err);
	if (!gw) {
		fprintf(stderr, "ucgw-send: %s\n", ucgw_last_error());
		return 1;
	}
	struct ucgw_outcome out;
	int rc = file ? ucgw_send_file(gw, file, &opts, &out) : ucgw_send(gw, data, strlen(data), &opts, &out);
	if (rc == UCGW_OK)
		printf("%s %s%s%s\n", out.id, out.status, opts.wait ? " by " : "", opts.wait ? out.protocol : "");
	else
		fprintf(stderr, "ucgw-send: %s: %s\n", ucgw_strerror(rc), out.error);
	ucgw_close(gw);
	return rc == UCGW_OK ? 0 : 1;
}
