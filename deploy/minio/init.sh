#!/bin/sh
# One-shot (compose service minio-init): create the bucket, then one MinIO user per acefarm service with a
# policy limited to the prefixes that service uses (schemas/storage_keys.py). Re-running updates passwords
# and policies. Secrets come from the environment (compose requires each one).
set -eu
B="${BUCKET:?}"
mc alias set local http://minio:9000 "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" >/dev/null
mc mb --ignore-existing "local/$B"

# policy NAME BUCKET-ACTIONS OBJECT-STATEMENTS: write the policy, attach it to the user NAME.
policy() {
  name=$1 bucket_actions=$2 objects=$3
  cat > "/tmp/$name.json" <<JSON
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": [$bucket_actions], "Resource": ["arn:aws:s3:::$B"]}$objects
]}
JSON
  mc admin policy create local "acefarm-$name" "/tmp/$name.json"
  mc admin policy attach local "acefarm-$name" --user "$name" >/dev/null 2>&1 || true
}

# objects ACTIONS PREFIX...: one statement allowing ACTIONS on objects under each prefix.
objects() {
  actions=$1; shift
  resources=""
  for prefix in "$@"; do resources="$resources${resources:+, }\"arn:aws:s3:::$B/$prefix*\""; done
  printf ',\n  {"Effect": "Allow", "Action": [%s], "Resource": [%s]}' "$actions" "$resources"
}

READ='"s3:GetObject"'
WRITE='"s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"'
DELETE='"s3:DeleteObject"'
LIST='"s3:ListBucket", "s3:GetBucketLocation"'

mc admin user add local gateway "${MINIO_GATEWAY_SECRET:?}"
policy gateway "$LIST" "$(objects "$READ, $WRITE, $DELETE" inputs/ datasets/ loras/)$(objects "$READ, $DELETE" outputs/ checkpoints/)"
mc admin user add local gpu "${MINIO_GPU_SECRET:?}"
policy gpu "$LIST" "$(objects "$READ" inputs/ loras/)$(objects "$READ, $WRITE, $DELETE" outputs/ attempts/)"
mc admin user add local planner "${MINIO_PLANNER_SECRET:?}"
policy planner "$LIST" "$(objects "$READ" inputs/)$(objects "$READ, $WRITE, $DELETE" outputs/ plans/ attempts/)"
mc admin user add local trainer "${MINIO_TRAINER_SECRET:?}"
policy trainer "$LIST" "$(objects "$READ" datasets/)$(objects "$READ, $WRITE, $DELETE" checkpoints/ loras/ attempts/)"
# Only the retention step (storage-init: acefarm storage setup-lifecycle) may change the bucket's lifecycle.
mc admin user add local lifecycle "${MINIO_LIFECYCLE_SECRET:?}"
policy lifecycle "$LIST, \"s3:GetLifecycleConfiguration\", \"s3:PutLifecycleConfiguration\"" ""
echo "acefarm: bucket $B, users gateway, gpu, planner, trainer, lifecycle"
