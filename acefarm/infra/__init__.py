"""Infrastructure every service uses: settings, logging, Kafka clients, storage, audio codecs."""
