"""The operator console, ``nanoscope gui``: a PySide6 + pyqtgraph window on the instrument.

It is a client only: of the IOCs (Channel Access: device readbacks and the camera's
preview), of the instrument server's queue (bluesky-queueserver-api), of its document
proxy (0MQ) and of its catalog (Tiled). It runs no RunEngine, so closing or killing it
never stops a scan. One job per module:

* :mod:`.addresses`: where the server's parts listen (configuration or ready line);
* :mod:`.pv_monitor`: Channel Access monitors, their latest values and trends;
* :mod:`.preview_source` and :mod:`.camera_view`: the camera's preview, decimated, and its view;
* :mod:`.devices_panel`: readbacks and alarms of every device;
* :mod:`.plan_form`: a form per registered plan, checked with the plan's own messages;
* :mod:`.queue_panel`: the queue, its history, pause / resume / abort, progress;
* :mod:`.documents_feed` and :mod:`.live_scan`: the server's documents, read off the GUI thread;
* :mod:`.live_views`: the live sinogram and the online reconstruction's slices with labels;
* :mod:`.runs_panel`: recent runs from the catalog;
* :mod:`.main_window` and :mod:`.app`: the window, and the ``nanoscope gui`` command.
"""
