DROP TABLE cancelled_orders;
DROP TABLE payments;
