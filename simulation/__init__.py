"""The what-if simulator in one room: the driver, the dry-run activities and the views. The workflows
it runs are the real ones from `workflows/`."""
