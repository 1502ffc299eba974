#!/bin/sh
# Runs the container's command as the unprivileged `app` user.
#
# The container starts as root only for this: Fly mounts volumes owned by root, and
# SQLite and the results need to write to /data. So /data (the mount point alone, not
# its contents, which `app` wrote) is handed to `app`, then root is dropped for good.
# `exec` keeps the command as the process that receives Fly's SIGTERM.
set -eu

if [ "$(id -u)" = 0 ]; then
    chown app:app /data
    exec setpriv --reuid=app --regid=app --init-groups -- "$@"
fi
exec "$@"
