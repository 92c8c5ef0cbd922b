# JSON from busybox sh: one string quoter, so every file L1 writes is valid JSON.
jstr() {
  printf '%s' "$1" | awk 'BEGIN { ORS = ""; printf "\"" }
    { gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); gsub(/\r/, "\\r"); if (NR > 1) printf "\\n"; print }
    END { printf "\"" }'
}
