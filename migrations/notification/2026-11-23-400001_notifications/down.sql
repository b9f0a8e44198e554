DROP TABLE contacts;
DROP TABLE notifications;
