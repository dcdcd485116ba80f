"""The operator: Kopf handlers feed a work queue; workers reconcile Organizations."""
