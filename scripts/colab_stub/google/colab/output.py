"""``google.colab.output``: the widget-manager switches. Colab renders ipywidgets 7 natively;
ipywidgets 8 needs ``enable_custom_widget_manager()``. Here there is no front end, so the calls
only record what was asked."""

custom_widget_manager_enabled = False


def enable_custom_widget_manager() -> None:
    global custom_widget_manager_enabled
    custom_widget_manager_enabled = True


def disable_custom_widget_manager() -> None:
    global custom_widget_manager_enabled
    custom_widget_manager_enabled = False
