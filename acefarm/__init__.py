"""Shared runtime plumbing for acefarm services: settings, logging, Kafka, storage, audio, model loading.

It imports `schemas` and libraries, never a service package.
"""
